/* SPDX-License-Identifier: MIT */
/* Public entry points that combine layers, so that no layer has to reach
 * above itself. Today one: tether_loop_new() checks the loop options that
 * belong to the layers above the loop (the resolver's DNS options), then
 * lets loop.c build the loop. Keeping these checks here, above both, leaves
 * the loop layer with no knowledge of DNS while a bad option is still
 * reported by the call that sets it. */
#include "dns.h"
#include "loop.h"

int tether_loop_new(tether_loop **out, const tether_loop_opts *opts)
{
    if (out == NULL) {
        return TETHER_EINVAL;
    }
    *out = NULL;
    if (opts != NULL && opts->size < sizeof(size_t)) {
        return TETHER_EINVAL; /* not initialised with tether_loop_opts_init() */
    }
    /* The caller's struct may be older (smaller) than ours: merge it over
     * the defaults first, as loop.c does. */
    tether_loop_opts o;
    tether_loop_opts_init(&o);
    if (opts != NULL) {
        tether__opts_merge(&o, sizeof o, opts);
    }
    int rv = tether__dns_loop_opts_check(&o);
    if (rv != TETHER_OK) {
        return rv;
    }
    return tether__loop_new(out, opts);
}
