/* SPDX-License-Identifier: MIT */
/* The run-time version, compiled from the same header the users see. */
#include "internal.h"

const char *tether_version(void)
{
    return TETHER_VERSION_STRING;
}
