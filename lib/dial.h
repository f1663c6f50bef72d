/* SPDX-License-Identifier: MIT */
/* Shared by the two halves of dialling: connect.c (names, Happy Eyeballs,
 * SRV) and dial_direct.c (one numeric address or a Unix path). */
#ifndef TETHER_DIAL_H
#define TETHER_DIAL_H

#include "conn.h"

#include <stdbool.h>
#include <sys/socket.h>

/* The address family tether_conn_opts::family allows (AF_UNSPEC: any). */
static inline int tether__family_af(tether_family f)
{
    return f == TETHER_FAMILY_V4 ? AF_INET : f == TETHER_FAMILY_V6 ? AF_INET6 : AF_UNSPEC;
}

/* Arms the connect deadline (connect_timeout_ms) in c->ex, allocating it;
 * TETHER_ENOMEM when it cannot. */
int tether__dial_arm(tether_conn *c);

/* Dials u directly when it is one numeric address or a Unix path (no
 * TLS, no SRV: the caller checked); false when it needs the dialer. On
 * true the outcome is on its way (or already reported) from the loop. */
bool tether__dial_direct(tether_conn *c, const struct tether__url *u);

#endif
