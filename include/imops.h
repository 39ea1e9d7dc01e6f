/* imops: the umbrella header. Include this, or a module's header alone. */
#ifndef IMOPS_H
#define IMOPS_H
#include "imops/version.h"
#include "imops/status.h"
#include "imops/core.h"
#include "imops/image.h"
#include "imops/data.h"
#include "imops/tensor.h"
#include "imops/backend.h"
#include "imops/track.h"
#include "imops/nn.h"
#include "imops/train.h"
#include "imops/http.h"
#endif
