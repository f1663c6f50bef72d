/* SPDX-License-Identifier: MIT */
/* The logging hook: one process-wide log function, level and user data.
 *
 * Log statements sit on cold paths (accept errors, failed handshakes and
 * connects), but they are compiled into every build, so a disabled one must
 * cost next to nothing: the threshold is an atomic that tether__log() reads
 * without a lock before it formats anything. The function and its user data
 * are read together under a mutex so that a message never goes to one
 * function with another's user data; the mutex is released before the
 * function runs, because user code must never run under an internal lock
 * (it may log from several threads, or call tether_set_log() itself). */
#include "internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>

/* Longer messages are cut short; every message the library logs is one
 * line built from a detail string of at most TETHER_ERROR_MSG_MAX bytes. */
#define LOG_MSG_MAX 1024

/* The least important level delivered, or -1 when logging is off
 * (tether__log_on() in internal.h reads it too). */
atomic_int tether__log_threshold = -1;

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static tether_log_fn log_fn;
static void *log_ud;

void tether_set_log(tether_log_fn fn, tether_log_level level, void *ud)
{
    int lv = (int)level;
    if (lv < TETHER_LOG_ERROR) {
        lv = TETHER_LOG_ERROR;
    } else if (lv > TETHER_LOG_DEBUG) {
        lv = TETHER_LOG_DEBUG;
    }
    pthread_mutex_lock(&log_lock);
    log_fn = fn;
    log_ud = ud;
    atomic_store_explicit(&tether__log_threshold, fn != NULL ? lv : -1, memory_order_relaxed);
    pthread_mutex_unlock(&log_lock);
}

const char *tether_log_level_name(tether_log_level level)
{
    switch (level) {
    case TETHER_LOG_ERROR:
        return "error";
    case TETHER_LOG_WARN:
        return "warn";
    case TETHER_LOG_INFO:
        return "info";
    case TETHER_LOG_DEBUG:
        return "debug";
    }
    return "?";
}

void tether__log(tether_log_level level, const char *fmt, ...)
{
    if ((int)level > atomic_load_explicit(&tether__log_threshold, memory_order_relaxed)) {
        return;
    }
    pthread_mutex_lock(&log_lock);
    tether_log_fn fn = log_fn;
    void *ud = log_ud;
    int lv = atomic_load_explicit(&tether__log_threshold, memory_order_relaxed);
    pthread_mutex_unlock(&log_lock);
    /* The setting may have changed since the unlocked check. */
    if (fn == NULL || (int)level > lv) {
        return;
    }
    char msg[LOG_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fn(level, msg, ud);
}
