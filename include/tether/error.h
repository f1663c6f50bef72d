/* SPDX-License-Identifier: MIT */
/**
 * @file error.h
 * @brief Error codes, their names and messages, and the detail record.
 *
 * @defgroup errors Errors
 * @brief Every fallible call returns #TETHER_OK (0) or a negative code.
 *
 * Codes are stable: a code is never renumbered, and new codes are added at
 * the end. The code says *what kind* of failure happened; where that is not
 * enough to act on (which URL part is malformed, which certificate check
 * failed, which addresses were tried) the library also keeps a detail
 * string: on the connection (tether_conn_last_error()), on a blocking
 * connection (tether_sync_last_error()), or in a #tether_error record that a
 * call fills in for failures that happen before any handle exists.
 *
 * Thread-safety: every function in this group is thread-safe.
 * @{
 */
#ifndef TETHER_ERROR_H
#define TETHER_ERROR_H

#include <tether/export.h>

#ifdef __cplusplus
extern "C" {
#endif

/** @brief Error codes returned by the library (0 or negative). */
typedef enum tether_err {
    TETHER_OK = 0,            /**< Success. */
    TETHER_EINVAL = -1,       /**< Invalid argument (NULL, malformed URL, bad option). */
    TETHER_ENOMEM = -2,       /**< Out of memory. */
    TETHER_EAGAIN = -3,       /**< Would block: the send queue is above its high-water mark. */
    TETHER_ECLOSED = -4,      /**< The handle is closing or closed. */
    TETHER_ECANCELED = -5,    /**< The operation was canceled (connection aborted locally). */
    TETHER_ETIMEDOUT = -6,    /**< A deadline passed (connect, read, write, heartbeat). */
    TETHER_ECONNREFUSED = -7, /**< The peer refused the connection (nothing listening). */
    TETHER_ECONNRESET = -8,   /**< The peer reset the connection. */
    TETHER_EOF = -9,          /**< The peer closed the connection cleanly. */
    TETHER_ETRUNCATED = -10,  /**< The stream ended inside a frame (or TLS without close_notify). */
    TETHER_EMSGSIZE = -11,    /**< A message is larger than the configured maximum. */
    TETHER_EPROTO = -12,      /**< The peer violated the framing protocol. */
    TETHER_EADDRINUSE = -13,  /**< The local address is already in use. */
    TETHER_EADDRNOTAVAIL = -14, /**< The address is not available on this host. */
    TETHER_ENETUNREACH = -15,   /**< The network is unreachable. */
    TETHER_EHOSTUNREACH = -16,  /**< The host is unreachable. */
    TETHER_EACCES = -17,        /**< Permission denied. */
    TETHER_EMFILE = -18,        /**< Too many open files (process or system limit). */
    TETHER_ENOTSUP = -19,       /**< The operation or option is not supported. */
    TETHER_EBUSY = -20,         /**< The resource is busy (e.g. a loop with live handles). */
    TETHER_ENOTCONN = -21,      /**< The connection is not established. */
    TETHER_ESYS = -22,          /**< Another operating-system error; the detail names it. */
    TETHER_ETLS = -23,          /**< TLS handshake or protocol failure; the detail names it. */
    TETHER_ECERT = -24,         /**< Certificate verification failed; the detail names why. */
    TETHER_ENOTFOUND = -25,     /**< The host name does not exist (NXDOMAIN). */
    TETHER_EDNS = -26,          /**< DNS resolution failed (server failure, refused, bad reply). */
    TETHER_ENOADDR = -27,       /**< The name has no address of the requested family. */
    TETHER_EDNSTIMEDOUT = -28,  /**< No DNS server answered in time. */
    TETHER_ENOTTLS = -29,       /**< The peer does not speak TLS (plain TCP, HTTP, wrong port). */
    TETHER_ENOSHARED = -30,     /**< TLS peers have no protocol version or cipher suite in
                                     common; the detail names which. */
    TETHER_EALPN = -31,         /**< TLS peers have no application protocol (ALPN) in common. */
    TETHER_ECERTREQUIRED = -32, /**< The TLS server requires a client certificate and none was
                                     sent. */
} tether_err;

/** @brief Maximum length, including the terminating NUL, of a detail message. */
#define TETHER_ERROR_MSG_MAX 256

/**
 * @brief A code together with a human-readable detail message.
 *
 * Filled in by calls that can fail before a handle exists (for example a
 * malformed URL passed to tether_conn_dial()). The caller owns the record,
 * usually on its stack; the library only writes into it.
 */
typedef struct tether_error {
    int code;                           /**< The TETHER_E* code, or #TETHER_OK. */
    char message[TETHER_ERROR_MSG_MAX]; /**< NUL-terminated detail, "" when none. */
} tether_error;

/**
 * @brief Returns a short English description of an error code.
 * @param[in] err A TETHER_E* code (or any int).
 * @return A static string; never NULL. Unknown codes give "unknown error".
 */
TETHER_API const char *tether_strerror(int err);

/**
 * @brief Returns the symbolic name of an error code, e.g. "TETHER_EINVAL".
 * @param[in] err A TETHER_E* code.
 * @return A static string; never NULL. Unknown codes give "TETHER_E?".
 */
TETHER_API const char *tether_err_name(int err);

#ifdef __cplusplus
}
#endif

#endif /* TETHER_ERROR_H */
/** @} */
