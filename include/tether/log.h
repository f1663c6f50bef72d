/* SPDX-License-Identifier: MIT */
/**
 * @file log.h
 * @brief The logging hook: where the library's own diagnostics go.
 *
 * @defgroup log Logging
 * @brief Library diagnostics, delivered to a function the application sets.
 *
 * The library never prints anything by itself. Everything it has to say
 * that no return code or callback carries (an accept() that failed and is
 * being retried, a TLS handshake that an accepted client failed, a resolver
 * that could not be created, a connection that failed or was lost) can be
 * handed to the application through a log function set with
 * tether_set_log(). Until one is set, nothing is formatted at all: a
 * disabled log statement costs one atomic load and a comparison.
 *
 * Messages are single lines of English without a trailing newline, for
 * example `accept on tcp://127.0.0.1:5555 failed: Too many open files;
 * pausing accepts and retrying`. Their wording may change between
 * releases; programs must not parse them (use the return codes and
 * tether_conn_last_error() for decisions).
 *
 * @code
 * static void log_to_stderr(tether_log_level level, const char *msg, void *ud)
 * {
 *     (void)ud;
 *     fprintf(stderr, "tether %s: %s\n", tether_log_level_name(level), msg);
 * }
 *
 * tether_set_log(log_to_stderr, TETHER_LOG_INFO, NULL);
 * @endcode
 *
 * **Thread-safety.** The setting is global to the process and every
 * function in this group is thread-safe. The log function itself is called
 * on whichever thread produced the message (each loop's own thread, or the
 * thread inside a blocking-API call), possibly on several threads at once,
 * so it must be thread-safe too.
 * @{
 */
#ifndef TETHER_LOG_H
#define TETHER_LOG_H

#include <tether/export.h>

#ifdef __cplusplus
extern "C" {
#endif

/**
 * @brief How important a log message is.
 *
 * The values are ordered: a log function set with level L receives every
 * message whose level is L or more important (numerically less or equal).
 */
typedef enum tether_log_level {
    TETHER_LOG_ERROR = 0, /**< Something failed that the library cannot report through any
                               return code or callback (e.g. the resolver cannot be created). */
    TETHER_LOG_WARN = 1,  /**< A problem the library works around: accept() failing with
                               EMFILE and being retried, an accepted client failing its TLS
                               handshake. */
    TETHER_LOG_INFO = 2,  /**< Noteworthy events in normal operation, such as a listener
                               starting to listen. */
    TETHER_LOG_DEBUG = 3, /**< Detail for debugging: every failed connect and every
                               connection that ends with an error, with its reason. */
} tether_log_level;

/**
 * @brief A function that receives the library's log messages.
 *
 * Called synchronously from inside the library, on the thread that produced
 * the message, never while the library holds an internal lock. It must not
 * block for long (it runs on a loop thread) and must not call back into the
 * object that is logging; calling tether_set_log() from inside it is allowed.
 * @param[in] level How important the message is.
 * @param[in] msg   One line of text, without a trailing newline,
 *                  **borrowed**: valid only until the function returns.
 * @param[in] ud    The user data given to tether_set_log().
 */
typedef void (*tether_log_fn)(tether_log_level level, const char *msg, void *ud);

/**
 * @brief Sets (or removes) the process-wide log function.
 *
 * By default there is none and the library prints nothing. The three values
 * are replaced together: a message is never delivered to one function with
 * the user data of another.
 *
 * **Thread-safe**: may be called at any time from any thread, including
 * from inside the log function. A message that another thread has already
 * begun to deliver when this is called may still reach the previous function
 * (with its user data) shortly after this returns, so keep what the previous
 * user data points to alive until every loop that may log has stopped.
 * @param[in] fn    The log function, or NULL to turn logging off.
 * @param[in] level The least important level to deliver: #TETHER_LOG_ERROR
 *                  delivers errors only, #TETHER_LOG_DEBUG everything. A
 *                  value outside the enumeration is clamped into it.
 * @param[in] ud    Passed to @p fn with every message; the library does not
 *                  own it.
 */
TETHER_API void tether_set_log(tether_log_fn fn, tether_log_level level, void *ud);

/**
 * @brief Returns the name of a log level: "error", "warn", "info" or "debug".
 *
 * Thread-safe.
 * @param[in] level A level.
 * @return A static string; "?" for a value outside the enumeration.
 */
TETHER_API const char *tether_log_level_name(tether_log_level level);

#ifdef __cplusplus
}
#endif

#endif /* TETHER_LOG_H */
/** @} */
