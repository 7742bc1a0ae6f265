#include "sas.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "errors.h"
#include "limits.h"

static const char prefix[] = "SharedAccessSignature";

/*
 * HMAC-SHA256 contexts are copied from one template made once: fetching the
 * HMAC implementation and its digest on every call takes OpenSSL 3's
 * provider locks, and a device costs several HMACs per request. The template
 * lives as long as the process.
 */
static EVP_MAC_CTX *hmac_template;
static pthread_once_t hmac_once = PTHREAD_ONCE_INIT;

static void hmac_template_init(void)
{
    EVP_MAC *m = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx = m ? EVP_MAC_CTX_new(m) : NULL;
    char digest[] = "SHA256";
    OSSL_PARAM params[2];

    params[0] = OSSL_PARAM_construct_utf8_string("digest", digest, 0);
    params[1] = OSSL_PARAM_construct_end();
    if (ctx != NULL && EVP_MAC_CTX_set_params(ctx, params) == 1)
        hmac_template = ctx;
    else
        EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(m); /* the context keeps its own reference */
}

static int hmac_sha256(const uint8_t *key, size_t keylen, const void *d1, size_t l1,
                       const void *d2, size_t l2, const void *d3, size_t l3, uint8_t mac[32])
{
    EVP_MAC_CTX *ctx;
    size_t outlen = 0;
    int r = PROV_ECRYPTO;

    pthread_once(&hmac_once, hmac_template_init);
    if (hmac_template == NULL || (ctx = EVP_MAC_CTX_dup(hmac_template)) == NULL)
        return PROV_ECRYPTO;
    if (EVP_MAC_init(ctx, key, keylen, NULL) != 1)
        goto out;
    if (l1 && EVP_MAC_update(ctx, d1, l1) != 1)
        goto out;
    if (l2 && EVP_MAC_update(ctx, d2, l2) != 1)
        goto out;
    if (l3 && EVP_MAC_update(ctx, d3, l3) != 1)
        goto out;
    if (EVP_MAC_final(ctx, mac, &outlen, 32) != 1 || outlen != 32)
        goto out;
    r = 0;
out:
    EVP_MAC_CTX_free(ctx);
    return r;
}

int sas_compute(const uint8_t *key, size_t keylen, const char *sr_raw, const char *se_raw,
                uint8_t mac[32])
{
    return hmac_sha256(key, keylen, sr_raw, strlen(sr_raw), "\n", 1, se_raw, strlen(se_raw), mac);
}

static int copy_field(char *dst, size_t dstlen, const char *v, size_t vlen)
{
    if (vlen >= dstlen)
        return PROV_EPROTO;
    memcpy(dst, v, vlen);
    dst[vlen] = '\0';
    return 0;
}

int sas_parse(const char *header, struct sas_token *out, const char **why)
{
    const char *p;
    bool have_sr = false, have_sig = false, have_se = false;
    static const char *dummy;

    if (why == NULL)
        why = &dummy;
    memset(out, 0, sizeof(*out));
    if (header == NULL) {
        *why = "missing authorization";
        return PROV_EPROTO;
    }
    if (strlen(header) > PROV_MAX_SAS_TOKEN) {
        *why = "authorization too long";
        return PROV_EPROTO;
    }
    while (*header == ' ')
        header++;
    if (strncmp(header, prefix, sizeof(prefix) - 1) != 0 || header[sizeof(prefix) - 1] != ' ') {
        *why = "authorization scheme is not SharedAccessSignature";
        return PROV_EPROTO;
    }
    p = header + sizeof(prefix);
    while (*p == ' ')
        p++;
    while (*p) {
        const char *end = strchr(p, '&');
        const char *eq;
        size_t flen = end ? (size_t)(end - p) : strlen(p);
        size_t nlen, vlen;
        const char *v;

        eq = memchr(p, '=', flen);
        if (eq == NULL) {
            *why = "malformed token field";
            return PROV_EPROTO;
        }
        nlen = (size_t)(eq - p);
        v = eq + 1;
        vlen = flen - nlen - 1;
        if (nlen == 2 && str_ieqn(p, "sr", 2)) {
            if (have_sr || copy_field(out->sr_raw, sizeof(out->sr_raw), v, vlen) != 0 ||
                url_decode(v, vlen, out->sr, false) < 0) {
                *why = "bad sr";
                return PROV_EPROTO;
            }
            have_sr = true;
        } else if (nlen == 3 && str_ieqn(p, "sig", 3)) {
            char dec[128];
            uint8_t raw[96];
            int n;

            if (have_sig || vlen >= sizeof(dec)) {
                *why = "bad sig";
                return PROV_EPROTO;
            }
            n = url_decode(v, vlen, dec, false);
            if (n < 0 || (size_t)n > 64 || (n = b64_decode(dec, (size_t)n, raw)) != 32) {
                *why = "bad sig";
                return PROV_EPROTO;
            }
            memcpy(out->sig, raw, 32);
            have_sig = true;
        } else if (nlen == 2 && str_ieqn(p, "se", 2)) {
            char dec[24];
            long long se = 0;
            int n;

            if (have_se || copy_field(out->se_raw, sizeof(out->se_raw), v, vlen) != 0) {
                *why = "bad se";
                return PROV_EPROTO;
            }
            n = url_decode(v, vlen, dec, false);
            if (n <= 0 || n > 18) {
                *why = "bad se";
                return PROV_EPROTO;
            }
            for (int i = 0; i < n; i++) {
                if (dec[i] < '0' || dec[i] > '9') {
                    *why = "bad se";
                    return PROV_EPROTO;
                }
                se = se * 10 + (dec[i] - '0');
            }
            out->se = se;
            have_se = true;
        } else if (nlen == 3 && str_ieqn(p, "skn", 3)) {
            if (out->has_skn || vlen >= sizeof(out->skn) ||
                url_decode(v, vlen, out->skn, false) < 0) {
                *why = "bad skn";
                return PROV_EPROTO;
            }
            out->has_skn = true;
        }
        /* unknown fields are ignored */
        p = end ? end + 1 : p + flen;
    }
    if (!have_sr || !have_sig || !have_se) {
        *why = !have_sr ? "token has no sr" : !have_sig ? "token has no sig" : "token has no se";
        return PROV_EPROTO;
    }
    return 0;
}

bool sas_check_key(const struct sas_token *tok, const uint8_t *key, size_t keylen)
{
    uint8_t mac[32];
    bool ok;

    if (sas_compute(key, keylen, tok->sr_raw, tok->se_raw, mac) != 0)
        return false;
    ok = ct_equal(mac, tok->sig, 32);
    prov_cleanse(mac, sizeof(mac));
    return ok;
}

bool sas_check_b64_key(const struct sas_token *tok, const char *b64key)
{
    uint8_t key[2 * PROV_MAX_KEY_BYTES];
    size_t len;
    int n;
    bool ok;

    if (b64key == NULL)
        return false;
    len = strlen(b64key);
    if (b64_decoded_max(len) > sizeof(key))
        return false;
    n = b64_decode(b64key, len, key);
    if (n <= 0)
        return false;
    ok = sas_check_key(tok, key, (size_t)n);
    prov_cleanse(key, sizeof(key));
    return ok;
}

char *sas_build(const char *resource, const char *key_b64, const char *skn, long long expiry)
{
    uint8_t key[256];
    uint8_t mac[32];
    char sig[45], se[24];
    char *sr = NULL, *sigenc = NULL, *out = NULL;
    size_t len = strlen(key_b64);
    int n;

    if (b64_decoded_max(len) > sizeof(key))
        return NULL;
    n = b64_decode(key_b64, len, key);
    if (n <= 0)
        return NULL;
    sr = url_encode_alloc(resource);
    snprintf(se, sizeof(se), "%lld", expiry);
    if (sr == NULL || sas_compute(key, (size_t)n, sr, se, mac) != 0)
        goto out;
    b64_encode(mac, 32, sig);
    sigenc = url_encode_alloc(sig);
    if (sigenc == NULL)
        goto out;
    len = strlen(sr) + strlen(sigenc) + strlen(se) + (skn ? strlen(skn) : 0) + 64;
    out = malloc(len);
    if (out == NULL)
        goto out;
    if (skn != NULL)
        snprintf(out, len, "SharedAccessSignature sr=%s&sig=%s&se=%s&skn=%s", sr, sigenc, se, skn);
    else
        snprintf(out, len, "SharedAccessSignature sr=%s&sig=%s&se=%s", sr, sigenc, se);
out:
    prov_cleanse(key, sizeof(key));
    prov_cleanse(mac, sizeof(mac));
    free(sr);
    free(sigenc);
    return out;
}

int derive_device_key_raw(const uint8_t *group_key, size_t len, const char *registration_id,
                          uint8_t out[32])
{
    return hmac_sha256(group_key, len, registration_id, strlen(registration_id), NULL, 0, NULL, 0,
                       out);
}

int derive_device_key(const char *group_key_b64, const char *registration_id, char out[45])
{
    uint8_t key[256];
    uint8_t d[32];
    size_t len = strlen(group_key_b64);
    int n, r;

    if (b64_decoded_max(len) > sizeof(key))
        return PROV_EINVAL;
    n = b64_decode(group_key_b64, len, key);
    if (n <= 0)
        return PROV_EINVAL;
    r = derive_device_key_raw(key, (size_t)n, registration_id, d);
    if (r == 0)
        b64_encode(d, 32, out);
    prov_cleanse(key, sizeof(key));
    prov_cleanse(d, sizeof(d));
    return r;
}

int hub_password_derive(const uint8_t *key, size_t keylen, const char *device_id, char out[45])
{
    uint8_t d[32];
    int r = hmac_sha256(key, keylen, PROV_HUB_PASSWORD_LABEL, strlen(PROV_HUB_PASSWORD_LABEL),
                        device_id, strlen(device_id), NULL, 0, d);

    if (r == 0)
        b64_encode(d, 32, out);
    prov_cleanse(d, sizeof(d));
    return r;
}
