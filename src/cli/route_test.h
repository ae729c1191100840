/* route_test.h — `portico route-test`: what a configuration does with one
 * request (route, plugins in order, upstream target, why the other routes
 * did not match). See route_test.c. */
#ifndef PT_CLI_ROUTE_TEST_H
#define PT_CLI_ROUTE_TEST_H

#include "proxy/generation.h"

/* Prints the explanation for METHOD URL with headers hdrs[0..nhdrs)
 * ("Name: value") on stdout. Returns 0 when a route matched, 1 when the
 * answer would be an error (400/404/405), 2 on bad arguments. */
int pt_cli_route_test(pt_generation *g, const char *method, const char *url, char **hdrs, int nhdrs);

#endif
