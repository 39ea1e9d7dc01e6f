/* imops version: the version of the binary and its libraries. */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "imops/version.h"

int cli_version(int argc, char **argv) {
  int json = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--json"))
      json = 1;
    else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      printf("usage: imops version [--json]\n\nPrints the version of imops.\n");
      return CLI_OK;
    } else
      return cli_usage_error("version", "unknown option '%s'", argv[i]);
  }
  if (json)
    printf("{\"version\": \"%s\", \"jansson\": \"%s\"}\n", im_version(), JANSSON_VERSION);
  else
    printf("imops %s\n", im_version());
  return CLI_OK;
}
