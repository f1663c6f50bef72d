/* SPDX-License-Identifier: MIT */
/* Error names, messages and the errno mapping. */
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct err_entry {
    int code;
    const char *name;
    const char *msg;
};

/* Indexed by -code, so lookups are O(1); the static_assert below keeps the
 * table in step with the enum. */
static const struct err_entry err_table[] = {
    {TETHER_OK, "TETHER_OK", "success"},
    {TETHER_EINVAL, "TETHER_EINVAL", "invalid argument"},
    {TETHER_ENOMEM, "TETHER_ENOMEM", "out of memory"},
    {TETHER_EAGAIN, "TETHER_EAGAIN", "resource temporarily unavailable (send queue full)"},
    {TETHER_ECLOSED, "TETHER_ECLOSED", "connection is closed"},
    {TETHER_ECANCELED, "TETHER_ECANCELED", "operation canceled"},
    {TETHER_ETIMEDOUT, "TETHER_ETIMEDOUT", "timed out"},
    {TETHER_ECONNREFUSED, "TETHER_ECONNREFUSED", "connection refused"},
    {TETHER_ECONNRESET, "TETHER_ECONNRESET", "connection reset by peer"},
    {TETHER_EOF, "TETHER_EOF", "connection closed by peer"},
    {TETHER_ETRUNCATED, "TETHER_ETRUNCATED", "stream truncated"},
    {TETHER_EMSGSIZE, "TETHER_EMSGSIZE", "message too large"},
    {TETHER_EPROTO, "TETHER_EPROTO", "protocol error"},
    {TETHER_EADDRINUSE, "TETHER_EADDRINUSE", "address already in use"},
    {TETHER_EADDRNOTAVAIL, "TETHER_EADDRNOTAVAIL", "address not available"},
    {TETHER_ENETUNREACH, "TETHER_ENETUNREACH", "network unreachable"},
    {TETHER_EHOSTUNREACH, "TETHER_EHOSTUNREACH", "host unreachable"},
    {TETHER_EACCES, "TETHER_EACCES", "permission denied"},
    {TETHER_EMFILE, "TETHER_EMFILE", "too many open files"},
    {TETHER_ENOTSUP, "TETHER_ENOTSUP", "operation not supported"},
    {TETHER_EBUSY, "TETHER_EBUSY", "resource busy"},
    {TETHER_ENOTCONN, "TETHER_ENOTCONN", "not connected"},
    {TETHER_ESYS, "TETHER_ESYS", "system error"},
    {TETHER_ETLS, "TETHER_ETLS", "TLS error"},
    {TETHER_ECERT, "TETHER_ECERT", "certificate verification failed"},
    {TETHER_ENOTFOUND, "TETHER_ENOTFOUND", "host not found"},
    {TETHER_EDNS, "TETHER_EDNS", "DNS resolution failed"},
    {TETHER_ENOADDR, "TETHER_ENOADDR", "no address of the requested family"},
    {TETHER_EDNSTIMEDOUT, "TETHER_EDNSTIMEDOUT", "DNS query timed out"},
    {TETHER_ENOTTLS, "TETHER_ENOTTLS", "peer does not speak TLS"},
    {TETHER_ENOSHARED, "TETHER_ENOSHARED", "no TLS version or cipher suite in common"},
    {TETHER_EALPN, "TETHER_EALPN", "no application protocol (ALPN) in common"},
    {TETHER_ECERTREQUIRED, "TETHER_ECERTREQUIRED", "client certificate required"},
};

static_assert(TETHER__ARRAY_SIZE(err_table) == 1 - TETHER_ECERTREQUIRED,
              "err_table must list every tether_err code in order");

static const struct err_entry *err_lookup(int err)
{
    if (err > 0 || -(long)err >= (long)TETHER__ARRAY_SIZE(err_table)) {
        return NULL;
    }
    return &err_table[-err];
}

const char *tether_strerror(int err)
{
    const struct err_entry *e = err_lookup(err);
    return e ? e->msg : "unknown error";
}

const char *tether_err_name(int err)
{
    const struct err_entry *e = err_lookup(err);
    return e ? e->name : "TETHER_E?";
}

int tether__errno_to_err(int e)
{
    switch (e) {
    case 0:
        return TETHER_OK;
    case EINVAL:
    case EAFNOSUPPORT:
    case EBADF:
        return TETHER_EINVAL;
    case ENOMEM:
    case ENOBUFS:
        return TETHER_ENOMEM;
    case EAGAIN:
    case EINPROGRESS:
        return TETHER_EAGAIN;
    case ETIMEDOUT:
        return TETHER_ETIMEDOUT;
    case ECONNREFUSED:
        return TETHER_ECONNREFUSED;
    case ECONNRESET:
    case EPIPE:
    case ECONNABORTED:
        return TETHER_ECONNRESET;
    case EADDRINUSE:
        return TETHER_EADDRINUSE;
    case EADDRNOTAVAIL:
        return TETHER_EADDRNOTAVAIL;
    case ENETUNREACH:
    case ENETDOWN:
        return TETHER_ENETUNREACH;
    case EHOSTUNREACH:
    case EHOSTDOWN:
        return TETHER_EHOSTUNREACH;
    case EACCES:
    case EPERM:
        return TETHER_EACCES;
    case EMFILE:
    case ENFILE:
        return TETHER_EMFILE;
    case EOPNOTSUPP:
    case EPROTONOSUPPORT:
        return TETHER_ENOTSUP;
    case ENOTCONN:
        return TETHER_ENOTCONN;
    case EMSGSIZE:
        return TETHER_EMSGSIZE;
    case ENOENT:
        /* connect() on a Unix socket path that does not exist: for the user
         * this is the same situation as a TCP port nobody listens on. */
        return TETHER_ECONNREFUSED;
    default:
        return TETHER_ESYS;
    }
}

int tether__set_error(tether_error *err, int code, const char *fmt, ...)
{
    if (err != NULL) {
        va_list ap;
        err->code = code;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return code;
}

void tether__opts_merge(void *dst, size_t dst_size, const void *src)
{
    /* src starts with its own size field, as every options struct does. */
    size_t src_size;
    memcpy(&src_size, src, sizeof src_size);
    if (src_size > dst_size) {
        src_size = dst_size;
    }
    if (src_size > sizeof(size_t)) {
        memcpy((char *)dst + sizeof(size_t), (const char *)src + sizeof(size_t),
               src_size - sizeof(size_t));
    }
}

void tether__sized_fill(void *dst, size_t size, const void *src, size_t src_size)
{
    memcpy(dst, src, TETHER__MIN(size, src_size));
    if (size > src_size) {
        memset((char *)dst + src_size, 0, size - src_size);
    }
}

void tether__error_clear(tether_error *err)
{
    if (err != NULL) {
        err->code = TETHER_OK;
        err->message[0] = '\0';
    }
}

/* Called through a volatile pointer, so that the compiler cannot see a
 * malloc() followed by a memset() and make a calloc() of them again. */
static void *(*volatile zero_fn)(void *, int, size_t) = memset;

void *tether__zalloc(size_t n)
{
    void *p = malloc(n);
    if (p != NULL) {
        zero_fn(p, 0, n);
    }
    return p;
}
