/* Small helpers shared by the daemon, the library and the CLIs. */
#ifndef PROV_COMMON_UTIL_H
#define PROV_COMMON_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define PROV_WUR __attribute__((warn_unused_result))

/*
 * Base64 (standard alphabet, padded). b64_decode accepts only canonical input
 * (length a multiple of 4, valid padding) and returns the decoded length or a
 * negative PROV_E*. out must hold b64_decoded_max(len) bytes.
 */
size_t b64_encoded_len(size_t len);
size_t b64_decoded_max(size_t len);
/* Writes a NUL-terminated string; out must hold b64_encoded_len(len) + 1. */
void b64_encode(const uint8_t *in, size_t len, char *out);
int b64_decode(const char *in, size_t len, uint8_t *out) PROV_WUR;
/* Heap variant; caller frees with free(). NULL on OOM. */
char *b64_encode_alloc(const uint8_t *in, size_t len);

/*
 * Percent-decodes len bytes of in into out (NUL-terminated; out must hold
 * len + 1). Accepts upper and lower case hex. If plus_is_space, '+' becomes ' '.
 * Returns the decoded length or PROV_EPROTO for a malformed escape or an
 * embedded NUL.
 */
int url_decode(const char *in, size_t len, char *out, bool plus_is_space) PROV_WUR;
/* Percent-encodes everything but ALPHA DIGIT - . _ ~ ; caller frees. */
char *url_encode_alloc(const char *in);

/* Lower-case hex of len bytes; out must hold 2*len+1. */
void hex_encode(const uint8_t *in, size_t len, char *out, bool upper);

/* "2026-11-29T18:50:37.660Z"; out must hold 32 bytes. */
void time_format_rfc3339(time_t sec, long msec, char *out, size_t outlen);
void time_now_rfc3339(char *out, size_t outlen);

/* Fills buf from the CSPRNG (OpenSSL); 0 or PROV_ECRYPTO. */
int random_bytes(uint8_t *buf, size_t len) PROV_WUR;
/* Random UUID v4 text, out must hold 37 bytes; 0 or PROV_ECRYPTO. */
int uuid_v4(char *out) PROV_WUR;

/* ASCII case-insensitive comparison helpers. */
bool str_ieq(const char *a, const char *b);
bool str_ieqn(const char *a, const char *b, size_t n);
void str_lower(char *s);

/* Wipes then frees; accepts NULL. */
/*
 * Appends n bytes to a heap buffer kept NUL-terminated (*data, *len, *cap;
 * start from NULL/0/0, free(*data) when done). PROV_ELIMIT when the total
 * would pass max bytes (nothing appended), PROV_ENOMEM, else 0. For bodies
 * read in pieces, e.g. libcurl write callbacks.
 */
int buf_append_capped(char **data, size_t *len, size_t *cap, const void *p, size_t n, size_t max);

/*
 * SHA-256 and SHA-1 fetched once from OpenSSL's default provider. EVP_sha256()
 * and EVP_sha1() are fetched again on every use, under OpenSSL 3's provider
 * locks; hot paths (allocation hashing, certificate thumbprints) use these.
 */
struct evp_md_st; /* EVP_MD, without pulling OpenSSL's headers into every user of util.h */
const struct evp_md_st *prov_md_sha256(void);
const struct evp_md_st *prov_md_sha1(void);

void prov_freezero(void *p, size_t len);
void prov_cleanse(void *p, size_t len);
/* Constant-time equality of two equal-length buffers. */
bool ct_equal(const void *a, const void *b, size_t len);

/*
 * Registration ids and enrollment group ids: 1..128 characters of
 * alphanumerics and - . _ : ; the last character alphanumeric or '-'.
 */
bool id_is_valid(const char *id);

/* The RFC 9110 reason phrase of an HTTP status, or NULL for one provd never meets. */
const char *http_reason_phrase(int status);

/* Value of one hex digit (either case), or -1. */
int hex_digit_value(char c);

/* CA certificate names: 1..PROV_MAX_CA_NAME of letters, digits, - _ . */
bool ca_name_is_valid(const char *name);

/* strtol-based integer parsing of the whole string. 0 or PROV_EINVAL. */
int parse_long(const char *s, long min, long max, long *out) PROV_WUR;

#endif
