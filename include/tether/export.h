/* SPDX-License-Identifier: MIT */
/**
 * @file export.h
 * @brief Symbol visibility for the public API.
 *
 * The library is built with `-fvisibility=hidden`; only declarations marked
 * with #TETHER_API are exported from the shared object.
 */
#ifndef TETHER_EXPORT_H
#define TETHER_EXPORT_H

/**
 * @def TETHER_API
 * @ingroup version
 * @brief Marks a function as part of the exported public API.
 *
 * Expands to `__attribute__((visibility("default")))` on GCC and Clang, and
 * to nothing elsewhere.
 */
#if defined(__GNUC__) || defined(__clang__)
#define TETHER_API __attribute__((visibility("default")))
#else
#define TETHER_API
#endif

#endif /* TETHER_EXPORT_H */
