/* SPDX-License-Identifier: MIT */
/**
 * @file framing.h
 * @brief Message framing: how whole messages are cut out of a byte stream.
 *
 * @defgroup framing Framing
 * @brief Built-in framings and the interface for writing your own.
 *
 * TCP and TLS carry a stream of bytes, not messages: one `read` can return
 * half a message or ten of them. A framing puts a boundary around every
 * message on the way out and finds it again on the way in, so that
 * tether_conn_send() and the `on_message` callback always deal in whole
 * messages.
 *
 * Built in (chosen with tether_conn_opts::framing):
 * - #TETHER_FRAMING_LEN32 (default): a 4-byte big-endian payload length,
 *   then the payload. Byte-compatible with any length-prefixed peer, such as
 *   Python's `struct.pack('!I', len(payload)) + payload`.
 * - #TETHER_FRAMING_VARINT: a base-128 varint length, then the payload
 *   (protobuf's "delimited" format, `writeDelimitedTo`).
 * - #TETHER_FRAMING_LINE: text lines ended by a delimiter (default "\n");
 *   the delimiter is not part of the message. tether_conn_opts::max_msg is
 *   the longest line accepted.
 *
 * A custom framing implements #tether_framer and is selected with
 * #TETHER_FRAMING_CUSTOM and tether_conn_opts::framer.
 *
 * Every framing enforces tether_conn_opts::max_msg *before* allocating
 * anything: a peer that announces a longer message has its connection closed
 * with #TETHER_EMSGSIZE, and the announced size is never allocated.
 * @{
 */
#ifndef TETHER_FRAMING_H
#define TETHER_FRAMING_H

#include <stddef.h>
#include <stdint.h>

#include <tether/export.h>

#ifdef __cplusplus
extern "C" {
#endif

/** @brief The built-in framings (tether_conn_opts::framing). */
typedef enum tether_framing_kind {
    TETHER_FRAMING_LEN32 = 0,  /**< 4-byte big-endian length + payload (default). */
    TETHER_FRAMING_VARINT = 1, /**< Base-128 varint length + payload (protobuf delimited). */
    TETHER_FRAMING_LINE = 2,   /**< Payload + delimiter (text lines). */
    TETHER_FRAMING_CUSTOM = 3, /**< A user-supplied #tether_framer. */
} tether_framing_kind;

/** @brief The most bytes a framer may put before a payload. */
#define TETHER_FRAME_HDR_MAX 16
/** @brief The most bytes a framer may put after a payload. */
#define TETHER_FRAME_TRAILER_MAX 16

/**
 * @brief The layout of one frame, as found by tether_framer::decode.
 */
typedef struct tether_frame {
    size_t hdr_len;     /**< Bytes before the payload. */
    size_t payload_len; /**< Payload bytes (the message length). */
    size_t trailer_len; /**< Bytes after the payload (e.g. a line delimiter). */
    int control;        /**< 0 for an application message; >0 for a control frame
                             (reserved for the library's own use, e.g. heartbeats). */
} tether_frame;

/**
 * @brief A framing: a decoder and an encoder.
 *
 * Both functions are called on the loop thread and must not block or keep
 * pointers into the buffers they are given. The framer object is shared by
 * every connection using it and must outlive them; it must be stateless or
 * immutable after creation (per-connection progress is kept by the library,
 * in the @p scan argument).
 */
typedef struct tether_framer {
    /** Short name for logs and errors, e.g. "len32". */
    const char *name;

    /**
     * @brief Finds the next frame at the start of @p buf.
     *
     * @param[in]     fr      This framer.
     * @param[in]     buf     Received bytes not yet consumed (borrowed).
     * @param[in]     len     Number of bytes in @p buf (may be 0).
     * @param[in]     max_msg The largest payload allowed.
     * @param[in,out] scan    Bytes of @p buf already examined without result
     *                        by an earlier call on this same frame; 0 for a new
     *                        frame. A framer that searches for a delimiter can
     *                        resume from here instead of rescanning.
     * @param[out]    f       The frame layout, when known.
     * @param[out]    detail  On error, set to a static string naming the problem.
     * @retval TETHER_OK       @p f is filled: the header is complete and the
     *                         payload length known, even if the payload itself
     *                         has not fully arrived yet.
     * @retval TETHER_EAGAIN   More bytes are needed to know the layout.
     * @retval TETHER_EMSGSIZE The announced payload exceeds @p max_msg; set
     *                         `f->payload_len` to the announced size (saturated
     *                         to SIZE_MAX) so the error can name it.
     * @retval TETHER_EPROTO   The bytes cannot start a valid frame.
     */
    int (*decode)(const struct tether_framer *fr, const uint8_t *buf, size_t len, size_t max_msg,
                  size_t *scan, tether_frame *f, const char **detail);

    /**
     * @brief Produces the bytes that go around a payload.
     *
     * @param[in]  fr          This framer.
     * @param[in]  payload     The message (borrowed).
     * @param[in]  len         Its length.
     * @param[out] hdr         At most #TETHER_FRAME_HDR_MAX header bytes.
     * @param[out] hdr_len     Number of header bytes written.
     * @param[out] trailer     At most #TETHER_FRAME_TRAILER_MAX trailer bytes.
     * @param[out] trailer_len Number of trailer bytes written.
     * @retval TETHER_OK       Encoded.
     * @retval TETHER_EMSGSIZE The framing cannot express this length.
     * @retval TETHER_EINVAL   The payload cannot be framed (e.g. a line that
     *                         contains the delimiter).
     */
    int (*encode)(const struct tether_framer *fr, const uint8_t *payload, size_t len, uint8_t *hdr,
                  size_t *hdr_len, uint8_t *trailer, size_t *trailer_len);

    /** Free for the framer's own configuration; the library never touches it. */
    void *arg;
} tether_framer;

/**
 * @brief Returns the built-in 4-byte big-endian length framer.
 * @return A static framer; never NULL.
 */
TETHER_API const tether_framer *tether_framer_len32(void);

/**
 * @brief Returns the built-in base-128 varint length framer.
 * @return A static framer; never NULL.
 */
TETHER_API const tether_framer *tether_framer_varint(void);

/**
 * @brief Returns the built-in line framer with the default delimiter "\n".
 *
 * The framer behind #TETHER_FRAMING_LINE when tether_conn_opts::line_delim
 * is NULL: each message is one line, the delimiter is not part of it, a
 * payload that contains a newline is refused by its encoder
 * (#TETHER_EINVAL), and the longest line accepted is the `max_msg` the
 * decoder is given. Useful as the inner framer of a custom one. For another
 * delimiter, use #TETHER_FRAMING_LINE with tether_conn_opts::line_delim.
 * @return A static framer; never NULL.
 */
TETHER_API const tether_framer *tether_framer_line(void);

#ifdef __cplusplus
}
#endif

#endif /* TETHER_FRAMING_H */
/** @} */
