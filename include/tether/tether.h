/**
 * @file tether.h
 * @brief The umbrella header: `#include <tether/tether.h>` is all a program needs.
 */
#ifndef TETHER_TETHER_H
#define TETHER_TETHER_H

#include <tether/export.h>
#include <tether/version.h>
#include <tether/error.h>
#include <tether/loop.h>
#include <tether/framing.h>
#include <tether/conn.h>
#include <tether/sync.h>
#include <tether/tls.h>

#ifdef __cplusplus
extern "C" {
#endif

/**
 * @brief The library's version at run time, e.g. "0.1.0".
 *
 * Compare with #TETHER_VERSION_STRING to detect a header/library mismatch.
 * Thread-safe.
 * @return A static string.
 */
TETHER_API const char *tether_version(void);

#ifdef __cplusplus
}
#endif

#endif /* TETHER_TETHER_H */
