/* Internal contracts of the monitor module. */
#ifndef IMOPS_MONITOR_IMPL_H
#define IMOPS_MONITOR_IMPL_H
#include "imops/monitor.h"

/** The registry takes p (from im_malloc) and frees it with itself (collector state).
 * On failure p is freed at once. */
im_status_t im__monitor_keep(im_monitor_t *reg, void *p);

#endif
