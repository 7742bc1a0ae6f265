#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "errors.h"
#include "limits.h"

size_t b64_encoded_len(size_t len)
{
    return 4 * ((len + 2) / 3);
}

size_t b64_decoded_max(size_t len)
{
    return 3 * (len / 4) + 3;
}

void b64_encode(const uint8_t *in, size_t len, char *out)
{
    if (len == 0) {
        out[0] = '\0';
        return;
    }
    EVP_EncodeBlock((unsigned char *)out, in, (int)len);
}

char *b64_encode_alloc(const uint8_t *in, size_t len)
{
    char *out = malloc(b64_encoded_len(len) + 1);

    if (out != NULL)
        b64_encode(in, len, out);
    return out;
}

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

int b64_decode(const char *in, size_t len, uint8_t *out)
{
    size_t o = 0;

    if (len % 4 != 0)
        return PROV_EPROTO;
    for (size_t i = 0; i < len; i += 4) {
        int v[4];
        int pad = 0;

        for (int k = 0; k < 4; k++) {
            unsigned char c = (unsigned char)in[i + k];

            if (c == '=' && i + 4 == len && k >= 2) {
                v[k] = 0;
                pad++;
                continue;
            }
            if (pad > 0)
                return PROV_EPROTO; /* data after padding */
            v[k] = b64_value(c);
            if (v[k] < 0)
                return PROV_EPROTO;
        }
        if (pad == 1 && in[i + 3] != '=')
            return PROV_EPROTO;
        out[o++] = (uint8_t)((v[0] << 2) | (v[1] >> 4));
        if (pad < 2)
            out[o++] = (uint8_t)(((v[1] & 0xf) << 4) | (v[2] >> 2));
        if (pad < 1)
            out[o++] = (uint8_t)(((v[2] & 0x3) << 6) | v[3]);
    }
    return (int)o;
}

int hex_digit_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int url_decode(const char *in, size_t len, char *out, bool plus_is_space)
{
    size_t o = 0;

    for (size_t i = 0; i < len; i++) {
        char c = in[i];

        if (c == '%') {
            int hi, lo;

            if (len - i < 3)
                return PROV_EPROTO;
            hi = hex_digit_value(in[i + 1]);
            lo = hex_digit_value(in[i + 2]);
            if (hi < 0 || lo < 0)
                return PROV_EPROTO;
            c = (char)((hi << 4) | lo);
            i += 2;
        } else if (c == '+' && plus_is_space) {
            c = ' ';
        }
        if (c == '\0')
            return PROV_EPROTO;
        out[o++] = c;
    }
    out[o] = '\0';
    return (int)o;
}

char *url_encode_alloc(const char *in)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t len = strlen(in);
    char *out = malloc(3 * len + 1);
    size_t o = 0;

    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];

        if (isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
            out[o++] = (char)c;
        } else {
            out[o++] = '%';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 0xf];
        }
    }
    out[o] = '\0';
    return out;
}

void hex_encode(const uint8_t *in, size_t len, char *out, bool upper)
{
    const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";

    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 0xf];
    }
    out[2 * len] = '\0';
}

void time_format_rfc3339(time_t sec, long msec, char *out, size_t outlen)
{
    struct tm tm;
    size_t n;

    gmtime_r(&sec, &tm);
    n = strftime(out, outlen, "%Y-%m-%dT%H:%M:%S", &tm);
    if (n > 0 && n < outlen)
        snprintf(out + n, outlen - n, ".%03ldZ", msec);
}

void time_now_rfc3339(char *out, size_t outlen)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    time_format_rfc3339(ts.tv_sec, ts.tv_nsec / 1000000L, out, outlen);
}

int random_bytes(uint8_t *buf, size_t len)
{
    return RAND_bytes(buf, (int)len) == 1 ? 0 : PROV_ECRYPTO;
}

int uuid_v4(char *out)
{
    uint8_t b[16];
    char h[33];

    if (random_bytes(b, sizeof(b)) != 0)
        return PROV_ECRYPTO;
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
    hex_encode(b, sizeof(b), h, false);
    snprintf(out, 37, "%.8s-%.4s-%.4s-%.4s-%.12s", h, h + 8, h + 12, h + 16, h + 20);
    return 0;
}

bool str_ieq(const char *a, const char *b)
{
    for (; *a && *b; a++, b++) {
        if (tolower((unsigned char)*a) != tolower((unsigned char)*b))
            return false;
    }
    return *a == *b;
}

bool str_ieqn(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (tolower((unsigned char)a[i]) != tolower((unsigned char)b[i]))
            return false;
        if (a[i] == '\0')
            return true;
    }
    return true;
}

void str_lower(char *s)
{
    for (; *s; s++)
        *s = (char)tolower((unsigned char)*s);
}

void prov_cleanse(void *p, size_t len)
{
    if (p != NULL)
        OPENSSL_cleanse(p, len);
}

void prov_freezero(void *p, size_t len)
{
    if (p == NULL)
        return;
    OPENSSL_cleanse(p, len);
    free(p);
}

bool ct_equal(const void *a, const void *b, size_t len)
{
    return CRYPTO_memcmp(a, b, len) == 0;
}

bool id_is_valid(const char *id)
{
    size_t len = strlen(id);

    if (len == 0 || len > 128)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)id[i];

        if (!(isalnum(c) || c == '-' || c == '.' || c == '_' || c == ':'))
            return false;
    }
    return isalnum((unsigned char)id[len - 1]) || id[len - 1] == '-';
}

int parse_long(const char *s, long min, long max, long *out)
{
    char *end;
    long v;

    if (s == NULL || *s == '\0')
        return PROV_EINVAL;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max)
        return PROV_EINVAL;
    *out = v;
    return 0;
}

const char *http_reason_phrase(int status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return NULL;
    }
}

bool ca_name_is_valid(const char *name)
{
    size_t len = name != NULL ? strlen(name) : 0;

    if (len == 0 || len > PROV_MAX_CA_NAME)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];

        if (!(isalnum(c) || c == '-' || c == '_' || c == '.'))
            return false;
    }
    return true;
}

int buf_append_capped(char **data, size_t *len, size_t *cap, const void *p, size_t n, size_t max)
{
    if (n > max - *len)
        return PROV_ELIMIT;
    if (*len + n + 1 > *cap) {
        size_t c = *cap ? *cap : 1024;
        char *nb;

        while (c < *len + n + 1)
            c *= 2;
        if ((nb = realloc(*data, c)) == NULL)
            return PROV_ENOMEM;
        *data = nb;
        *cap = c;
    }
    memcpy(*data + *len, p, n);
    *len += n;
    (*data)[*len] = '\0';
    return 0;
}

static EVP_MD *md_sha256, *md_sha1;
static pthread_once_t md_once = PTHREAD_ONCE_INIT;

static void md_fetch(void)
{
    md_sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    md_sha1 = EVP_MD_fetch(NULL, "SHA1", NULL);
}

const EVP_MD *prov_md_sha256(void)
{
    pthread_once(&md_once, md_fetch);
    return md_sha256 != NULL ? md_sha256 : EVP_sha256();
}

const EVP_MD *prov_md_sha1(void)
{
    pthread_once(&md_once, md_fetch);
    return md_sha1 != NULL ? md_sha1 : EVP_sha1();
}
