/*
 * prov-bench TPM devices, the TPM done in software (device-protocol doc §5):
 * each device has an RSA-2048 EK and SRK (the SDKs' templates, §5.1), kept in
 * --tpm-keys (PEM private keys, EK then SRK per device; made and saved when
 * the file is missing). A registration is the HTTPS flow of §4.4: the register
 * PUT with the "tpm" member and no Authorization gets 401 with the activation
 * blob; the device does what ActivateCredential and Import do (RSA-OAEP with
 * the EK and the SRK, KDFa, the integrity HMACs, AES-128-CFB) to recover K,
 * signs the SAS with it and sends the same PUT again, then polls with that
 * SAS. The hub key blob of the assigned result is checked for its six
 * elements but not imported (two more RSA decryptions per device, client-side
 * work that would only slow the load generator down).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "../common/util.h"
#include "../server/tpm_blob.h"
#include "../server/tpm_soft.h"
#include "bench_device.h"

#define EK_ATTRS                                                                                   \
    0x000300B2u /* fixedTPM|fixedParent|sensitiveDataOrigin|adminWithPolicy|restricted|decrypt */
#define SRK_ATTRS                                                                                  \
    0x00030472u /* fixedTPM|fixedParent|sensitiveDataOrigin|userWithAuth|noDA|restricted|decrypt   \
                 */
#define RSA_BYTES 256
#define TPM2B_RSA_PUBLIC_MAX 400

/* PolicySecret(TPM_RH_ENDORSEMENT), the EK template's authPolicy */
static const uint8_t ek_policy[32] = {
    0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xb3, 0xf8, 0x1a, 0x90, 0xcc, 0x8d, 0x46, 0xa5, 0xd7, 0x24,
    0xfd, 0x52, 0xd7, 0x6e, 0x06, 0x52, 0x0b, 0x64, 0xf2, 0xa1, 0xda, 0x1b, 0x33, 0x14, 0x69, 0xaa,
};

struct tpm_dev {
    EVP_PKEY *ek, *srk;
    char *ek_b64, *srk_b64; /* TPM2B_PUBLIC, base64 */
    uint8_t srk_name[TPM_NAME_SIZE];
};

static size_t put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
    return 2;
}

static size_t put32(uint8_t *p, uint32_t v)
{
    put16(p, (uint16_t)(v >> 16));
    put16(p + 2, (uint16_t)v);
    return 4;
}

/* The TPM2B_PUBLIC of an RSA-2048 key with the EK or SRK template; its length, or 0. */
static size_t rsa_public(EVP_PKEY *key, uint32_t attrs, uint8_t out[TPM2B_RSA_PUBLIC_MAX])
{
    BIGNUM *n = NULL;
    size_t o = 2;
    bool ok;

    o += put16(out + o, TPM_BLOB_ALG_RSA);
    o += put16(out + o, TPM_BLOB_ALG_SHA256);
    o += put32(out + o, attrs);
    if (attrs & 0x80) { /* adminWithPolicy */
        o += put16(out + o, sizeof(ek_policy));
        memcpy(out + o, ek_policy, sizeof(ek_policy));
        o += sizeof(ek_policy);
    } else {
        o += put16(out + o, 0);
    }
    o += put16(out + o, TPM_BLOB_ALG_AES);
    o += put16(out + o, 128);
    o += put16(out + o, TPM_BLOB_ALG_CFB);
    o += put16(out + o, TPM_BLOB_ALG_NULL); /* scheme */
    o += put16(out + o, 2048);
    o += put32(out + o, 0); /* exponent 0 = 65537 */
    o += put16(out + o, RSA_BYTES);
    ok = EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_RSA_N, &n) == 1 &&
         BN_bn2binpad(n, out + o, RSA_BYTES) == RSA_BYTES;
    BN_free(n);
    if (!ok)
        return 0;
    o += RSA_BYTES;
    put16(out, (uint16_t)(o - 2));
    return o;
}

static void dev_free(struct tpm_dev *t)
{
    if (t == NULL)
        return;
    EVP_PKEY_free(t->ek);
    EVP_PKEY_free(t->srk);
    free(t->ek_b64);
    free(t->srk_b64);
    free(t);
}

/* The public parts of a device whose keys are set. */
static int dev_publics(struct tpm_dev *t)
{
    uint8_t ek[TPM2B_RSA_PUBLIC_MAX], srk[TPM2B_RSA_PUBLIC_MAX];
    size_t ek_len = rsa_public(t->ek, EK_ATTRS, ek);
    size_t srk_len = rsa_public(t->srk, SRK_ATTRS, srk);

    if (ek_len == 0 || srk_len == 0)
        return -1;
    t->ek_b64 = b64_encode_alloc(ek, ek_len);
    t->srk_b64 = b64_encode_alloc(srk, srk_len);
    if (t->ek_b64 == NULL || t->srk_b64 == NULL)
        return -1;
    return tpm_name(srk + 2, srk_len - 2, t->srk_name) == 0 ? 0 : -1;
}

static int save_keys(struct bench_creds *c, const char *path, char *err, size_t errlen)
{
    char tmp[4096];
    FILE *f = creds_file_open(path, tmp, sizeof(tmp), err, errlen);
    bool ok = true;

    if (f == NULL)
        return -1;
    for (unsigned long i = 0; ok && i < c->count; i++)
        ok = PEM_write_PrivateKey(f, c->tpm[i]->ek, NULL, NULL, 0, NULL, NULL) == 1 &&
             PEM_write_PrivateKey(f, c->tpm[i]->srk, NULL, NULL, 0, NULL, NULL) == 1;
    return creds_file_close(f, ok, tmp, path, "TPM keys", err, errlen);
}

int tpm_creds_init(struct bench_creds *c, const struct bench_opts *o, char *err, size_t errlen)
{
    FILE *f;

    if (o->tpm_keys == NULL) {
        snprintf(err, errlen, "TPM needs --tpm-keys FILE (the devices' EK and SRK keys)");
        return -1;
    }
    c->tpm = calloc(c->count, sizeof(*c->tpm));
    if (c->tpm == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    f = fopen(o->tpm_keys, "r");
    for (unsigned long i = 0; i < c->count; i++) {
        struct tpm_dev *t = calloc(1, sizeof(*t));

        if ((c->tpm[i] = t) == NULL) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
        if (f != NULL) {
            t->ek = PEM_read_PrivateKey(f, NULL, NULL, NULL);
            t->srk = t->ek ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;
            if (t->srk == NULL) {
                snprintf(err, errlen, "--tpm-keys %s: holds fewer than %lu devices", o->tpm_keys,
                         c->count);
                goto fail;
            }
        } else {
            t->ek = EVP_RSA_gen(2048);
            t->srk = t->ek ? EVP_RSA_gen(2048) : NULL;
        }
        if (t->srk == NULL || EVP_PKEY_get_bits(t->ek) != 2048 ||
            EVP_PKEY_get_bits(t->srk) != 2048 || dev_publics(t) != 0) {
            snprintf(err, errlen, "TPM device %lu: unusable keys (RSA-2048 expected)", i);
            goto fail;
        }
    }
    if (f != NULL) {
        fclose(f);
        ERR_clear_error();
        return 0;
    }
    return save_keys(c, o->tpm_keys, err, errlen);
fail:
    if (f != NULL)
        fclose(f);
    ERR_clear_error();
    return -1;
}

void tpm_creds_free(struct bench_creds *c)
{
    for (unsigned long i = 0; c->tpm != NULL && i < c->count; i++)
        dev_free(c->tpm[i]);
    free(c->tpm);
    c->tpm = NULL;
}

/* ---- per device ---- */

int tpm_session_begin(struct device *d)
{
    d->tpm = d->th->sh->creds.tpm[d->index];
    return 0;
}

void tpm_session_end(struct device *d)
{
    d->tpm = NULL;
}

static json_t *tpm_member(const struct tpm_dev *t)
{
    return json_pack("{s:s, s:s}", "endorsementKey", t->ek_b64, "storageRootKey", t->srk_b64);
}

json_t *tpm_register_member(struct device *d)
{
    return tpm_member(d->tpm);
}

json_t *tpm_enrollment_member(const struct bench_creds *c, unsigned long i)
{
    return tpm_member(c->tpm[i]);
}

/* ---- the device side of ActivateCredential and Import ---- */

int tpm_challenge(struct device *d, const json_t *j)
{
    const char *blob = json_string_value(json_object_get(j, "authenticationKey"));
    uint8_t key[32];
    int rc = -1;

    if (d->sas != NULL) /* a second 401: the signed PUT was refused */
        return -1;
    if (tpm_soft_open(d->tpm->ek, d->tpm->srk, d->tpm->srk_name, blob, key) == 0) {
        d->sas = creds_sas(&d->th->sh->creds, d->th->sh->o, d->rid, key, sizeof(key));
        rc = d->sas != NULL ? 0 : -1;
    }
    prov_cleanse(key, sizeof(key));
    return rc;
}

int tpm_check_assigned(struct device *d, const json_t *j)
{
    const json_t *tpm = json_object_get(json_object_get(j, "registrationState"), "tpm");
    const char *blob = json_string_value(json_object_get(tpm, "authenticationKey"));

    (void)d;
    return tpm_soft_blob_well_formed(blob) ? 0 : -1;
}
