/* SPDX-License-Identifier: MIT */
/* A dnsmasq of the test's own on a loopback port, for the suites that
 * resolve through a real DNS server (test_dns, test_dns_srv): its temporary
 * directory, a free port, starting it with a configuration file, waiting
 * until it answers, stopping it, and a minimal DNS query to ask it. */
#ifndef TETHER_TEST_DNS_HELPERS_H
#define TETHER_TEST_DNS_HELPERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define TH_DNSMASQ "/usr/sbin/dnsmasq"

struct th_dnsmasq {
    pid_t pid; /* 0 when not running */
    int port;
    char dir[64];
    char conf[128]; /* <dir>/dnsmasq.conf */
    char log[128];  /* <dir>/dnsmasq.log: its stdout and stderr */
};

/* Writes text to path (asserting), readable by all: dnsmasq re-reads its
 * files as "nobody". */
void th_write_file(const char *path, const char *text);

/* A port on 127.0.0.1 that is free right now for both UDP and TCP; fails
 * the test after 100 tries. */
int th_free_port(void);

/* Asserts that dnsmasq is installed, creates a fresh directory
 * /tmp/<prefix>-XXXXXX (mode 0755) and sets conf and log inside it. */
void th_dnsmasq_init(struct th_dnsmasq *d, const char *prefix);

/* Forks dnsmasq --no-daemon --conf-file=<conf>, its output going to the
 * log (truncated first, or appended to with append); it dies with the
 * test. Sets d->pid. */
void th_dnsmasq_spawn(struct th_dnsmasq *d, bool append);

/* Polls, for up to ms, until answers(d->port) holds (1) or dnsmasq exits
 * (0, d->pid reaped and set to 0); -1 on timeout, dnsmasq still running. */
int th_dnsmasq_wait(struct th_dnsmasq *d, bool (*answers)(int port), int ms);

/* Stops dnsmasq (SIGTERM, then SIGKILL after 2 s) and reaps it. */
void th_dnsmasq_kill(struct th_dnsmasq *d);

/* Removes conf, log and the directory (after th_dnsmasq_kill). */
void th_dnsmasq_remove(struct th_dnsmasq *d);

/* Reads the start of the log into buf (empty if there is none). */
void th_dnsmasq_read_log(const struct th_dnsmasq *d, char *buf, size_t len);

/* Appends name to p in DNS wire format; returns the bytes written. */
size_t th_dns_put_name(uint8_t *p, const char *name);

/* Sends a query (id 0x1234, recursion desired, class IN) for name and type
 * to 127.0.0.1:port and waits up to timeout_ms for the answer with that
 * id. Returns its length in resp (at least 12), or -1 if none came. */
int th_dns_query(int port, const char *name, int type, uint8_t *resp, size_t cap, int timeout_ms);

#endif
