/*
 * The TPM 2.0 backend of libprov's TPM attestation (device protocol §5), on
 * tpm2-tss ESAPI with a TCTI chosen by a configuration string (tctildr).
 * See tpm.h for the contract. This is the only libprov file that includes
 * tss2 headers.
 *
 * Templates (§5.1): the EK is the TCG default RSA-2048 EK (the key a
 * manufacturer's EK certificate certifies, and what tpm2_createek makes):
 * attributes 0x000300B2, PolicySecret(endorsement) authPolicy, AES-128-CFB,
 * unique = 256 zero bytes. The SRK is the DPS SDKs' template: attributes
 * 0x00030472, no policy, AES-128-CFB, empty unique. Keys already at the
 * handles are used as they are, as the SDKs do.
 *
 * tpm2-tss writes its own error lines to stderr when a TPM command fails
 * (TSS2_LOG=all+none silences them); the expected cases (an empty handle, no
 * EK certificate) are found with TPM2_GetCapability so that they print
 * nothing.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <tss2/tss2_esys.h>
#include <tss2/tss2_mu.h>
#include <tss2/tss2_rc.h>
#include <tss2/tss2_tctildr.h>

#include "../common/util.h"
#include "lib.h"
#include "tpm.h"

/* The largest chunk read from NV at once; every TPM allows at least 512. */
#define NV_CHUNK_MIN 512

struct lib_tpm {
    TSS2_TCTI_CONTEXT *tcti;
    ESYS_CONTEXT *esys;
    ESYS_TR ek;
    ESYS_TR srk;
    uint8_t ek_pub[LIB_TPM_PUBLIC_MAX];
    size_t ek_pub_len;
    uint8_t srk_pub[LIB_TPM_PUBLIC_MAX];
    size_t srk_pub_len;
    uint8_t *ek_cert; /* DER, or NULL */
    size_t ek_cert_len;
    size_t input_max; /* largest TPM2_HMAC input: TPM_PT_INPUT_BUFFER, capped */
};

/* Logs a failed TPM command; returns PROV_ECRYPTO. */
static int tpm_fail(const char *what, TSS2_RC rc)
{
    if ((rc & ~TSS2_RC_LAYER_MASK) == TPM2_RC_INITIALIZE)
        lib_log(PROV_LOG_ERROR,
                "TPM: %s failed: the TPM has not been started (TPM2_Startup); "
                "start swtpm with --flags startup-clear, or run tpm2_startup -c",
                what);
    else
        lib_log(PROV_LOG_ERROR, "TPM: %s failed: %s (0x%x)", what, Tss2_RC_Decode(rc),
                (unsigned)rc);
    return PROV_ECRYPTO;
}

static void flush(struct lib_tpm *t, ESYS_TR *h)
{
    if (*h != ESYS_TR_NONE) {
        TSS2_RC rc = Esys_FlushContext(t->esys, *h);

        if (rc != TSS2_RC_SUCCESS)
            lib_log(PROV_LOG_WARN, "TPM: flushing a transient handle failed: %s",
                    Tss2_RC_Decode(rc));
        *h = ESYS_TR_NONE;
    }
}

static void tr_close(struct lib_tpm *t, ESYS_TR *h)
{
    if (*h != ESYS_TR_NONE)
        Esys_TR_Close(t->esys, h);
    *h = ESYS_TR_NONE;
}

/* Whether a persistent or NV handle is in use, asked without provoking an error. */
static int handle_exists(struct lib_tpm *t, TPM2_HANDLE h, bool *exists)
{
    TPMS_CAPABILITY_DATA *cap = NULL;
    TPMI_YES_NO more = TPM2_NO;
    TSS2_RC rc;

    *exists = false;
    rc = Esys_GetCapability(t->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, TPM2_CAP_HANDLES, h,
                            1, &more, &cap);
    if (rc != TSS2_RC_SUCCESS)
        return tpm_fail("GetCapability(handles)", rc);
    *exists = cap->data.handles.count > 0 && cap->data.handles.handle[0] == h;
    Esys_Free(cap);
    return 0;
}

/* One TPM property (TPM2_PT_*); def when the TPM does not report it. */
static uint32_t tpm_property(struct lib_tpm *t, TPM2_PT pt, uint32_t def)
{
    TPMS_CAPABILITY_DATA *cap = NULL;
    TPMI_YES_NO more = TPM2_NO;
    uint32_t v = def;

    if (Esys_GetCapability(t->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                           TPM2_CAP_TPM_PROPERTIES, pt, 1, &more, &cap) != TSS2_RC_SUCCESS)
        return def;
    if (cap->data.tpmProperties.count > 0 && cap->data.tpmProperties.tpmProperty[0].property == pt)
        v = cap->data.tpmProperties.tpmProperty[0].value;
    Esys_Free(cap);
    return v;
}

static void rsa_parent_params(TPMT_PUBLIC *p, TPMA_OBJECT attrs)
{
    p->type = TPM2_ALG_RSA;
    p->nameAlg = TPM2_ALG_SHA256;
    p->objectAttributes = attrs;
    p->parameters.rsaDetail.symmetric.algorithm = TPM2_ALG_AES;
    p->parameters.rsaDetail.symmetric.keyBits.aes = 128;
    p->parameters.rsaDetail.symmetric.mode.aes = TPM2_ALG_CFB;
    p->parameters.rsaDetail.scheme.scheme = TPM2_ALG_NULL;
    p->parameters.rsaDetail.keyBits = 2048;
    p->parameters.rsaDetail.exponent = 0;
}

static void ek_template(TPM2B_PUBLIC *tp)
{
    /* PolicySecret(TPM_RH_ENDORSEMENT) */
    static const uint8_t policy[32] = {
        0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xb3, 0xf8, 0x1a, 0x90, 0xcc,
        0x8d, 0x46, 0xa5, 0xd7, 0x24, 0xfd, 0x52, 0xd7, 0x6e, 0x06, 0x52,
        0x0b, 0x64, 0xf2, 0xa1, 0xda, 0x1b, 0x33, 0x14, 0x69, 0xaa,
    };
    TPMT_PUBLIC *p = &tp->publicArea;

    memset(tp, 0, sizeof(*tp));
    rsa_parent_params(p, TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                             TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_ADMINWITHPOLICY |
                             TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT);
    p->authPolicy.size = sizeof(policy);
    memcpy(p->authPolicy.buffer, policy, sizeof(policy));
    p->unique.rsa.size = 256; /* zeros: the TCG template */
}

static void srk_template(TPM2B_PUBLIC *tp)
{
    memset(tp, 0, sizeof(*tp));
    rsa_parent_params(&tp->publicArea, TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                                           TPMA_OBJECT_SENSITIVEDATAORIGIN |
                                           TPMA_OBJECT_USERWITHAUTH | TPMA_OBJECT_NODA |
                                           TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT);
}

/* CreatePrimary in hierarchy with tmpl, then EvictControl to handle; *out is its ESYS_TR. */
static int create_persistent(struct lib_tpm *t, const char *what, ESYS_TR hierarchy,
                             const TPM2B_PUBLIC *tmpl, TPM2_HANDLE handle, ESYS_TR *out)
{
    TPM2B_SENSITIVE_CREATE sens;
    TPM2B_DATA outside;
    TPML_PCR_SELECTION pcrs;
    ESYS_TR obj = ESYS_TR_NONE;
    TSS2_RC rc;
    int r = 0;

    memset(&sens, 0, sizeof(sens));
    memset(&outside, 0, sizeof(outside));
    memset(&pcrs, 0, sizeof(pcrs));
    rc = Esys_CreatePrimary(t->esys, hierarchy, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &sens,
                            tmpl, &outside, &pcrs, &obj, NULL, NULL, NULL, NULL);
    if (rc != TSS2_RC_SUCCESS)
        return tpm_fail(what, rc);
    rc = Esys_EvictControl(t->esys, ESYS_TR_RH_OWNER, obj, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                           ESYS_TR_NONE, handle, out);
    if (rc != TSS2_RC_SUCCESS)
        r = tpm_fail("EvictControl (persisting a primary key)", rc);
    flush(t, &obj);
    if (r == 0)
        lib_log(PROV_LOG_INFO, "TPM: %s created and persisted at 0x%08x", what, (unsigned)handle);
    return r;
}

/* The key at handle, created from tmpl when the handle is empty; its TPM2B_PUBLIC into buf. */
static int ensure_key(struct lib_tpm *t, const char *what, ESYS_TR hierarchy,
                      const TPM2B_PUBLIC *tmpl, TPM2_HANDLE handle, ESYS_TR *tr, uint8_t *buf,
                      size_t *len)
{
    TPM2B_PUBLIC *pub = NULL;
    size_t off = 0;
    bool exists;
    TSS2_RC rc;
    int r;

    if ((r = handle_exists(t, handle, &exists)) != 0)
        return r;
    if (!exists) {
        if ((r = create_persistent(t, what, hierarchy, tmpl, handle, tr)) != 0)
            return r;
    } else {
        rc = Esys_TR_FromTPMPublic(t->esys, handle, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, tr);
        if (rc != TSS2_RC_SUCCESS)
            return tpm_fail(what, rc);
        lib_log(PROV_LOG_DEBUG, "TPM: using the %s at 0x%08x", what, (unsigned)handle);
    }
    rc = Esys_ReadPublic(t->esys, *tr, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &pub, NULL, NULL);
    if (rc != TSS2_RC_SUCCESS)
        return tpm_fail("ReadPublic", rc);
    rc = Tss2_MU_TPM2B_PUBLIC_Marshal(pub, buf, LIB_TPM_PUBLIC_MAX, &off);
    Esys_Free(pub);
    if (rc != TSS2_RC_SUCCESS)
        return tpm_fail("marshalling a public area", rc);
    *len = off;
    return 0;
}

/*
 * The RSA EK certificate from NV 0x01c00002 (TCG EK Credential Profile), if
 * the TPM has one; read with the index's own (empty) authorization. Missing
 * or unreadable is not an error: a TPM group needs it, an individual
 * enrollment does not.
 */
static int read_ek_cert(struct lib_tpm *t)
{
    TPM2B_NV_PUBLIC *nvpub = NULL;
    TPM2B_MAX_NV_BUFFER *data = NULL;
    ESYS_TR nv = ESYS_TR_NONE;
    uint8_t *der = NULL;
    size_t size, off = 0, chunk;
    bool exists;
    TSS2_RC rc = TSS2_RC_SUCCESS;
    int r;

    if ((r = handle_exists(t, LIB_TPM_EK_CERT_NV_INDEX, &exists)) != 0)
        return r;
    if (!exists) {
        lib_log(PROV_LOG_DEBUG, "TPM: no EK certificate at NV index 0x%08x",
                (unsigned)LIB_TPM_EK_CERT_NV_INDEX);
        return 0;
    }
    chunk = tpm_property(t, TPM2_PT_NV_BUFFER_MAX, NV_CHUNK_MIN);
    if (chunk > sizeof(data->buffer))
        chunk = sizeof(data->buffer);
    if (chunk < 64)
        chunk = NV_CHUNK_MIN;
    rc = Esys_TR_FromTPMPublic(t->esys, LIB_TPM_EK_CERT_NV_INDEX, ESYS_TR_NONE, ESYS_TR_NONE,
                               ESYS_TR_NONE, &nv);
    if (rc == TSS2_RC_SUCCESS)
        rc =
            Esys_NV_ReadPublic(t->esys, nv, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &nvpub, NULL);
    if (rc != TSS2_RC_SUCCESS)
        goto out;
    size = nvpub->nvPublic.dataSize;
    if (size == 0 || size > LIB_TPM_EK_CERT_MAX || (der = malloc(size)) == NULL)
        goto out;
    while (off < size) {
        size_t n = size - off < chunk ? size - off : chunk;

        rc = Esys_NV_Read(t->esys, nv, nv, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, (UINT16)n,
                          (UINT16)off, &data);
        if (rc != TSS2_RC_SUCCESS || data->size != n)
            goto out;
        memcpy(der + off, data->buffer, n);
        Esys_Free(data);
        data = NULL;
        off += n;
    }
    /* the index may be larger than the certificate: keep the DER SEQUENCE only */
    if (size >= 4 && der[0] == 0x30 && der[1] == 0x82) {
        size_t dl = 4 + ((size_t)der[2] << 8 | der[3]);

        if (dl <= size)
            size = dl;
    }
    t->ek_cert = der;
    t->ek_cert_len = size;
    der = NULL;
    lib_log(PROV_LOG_INFO, "TPM: EK certificate read from NV index 0x%08x (%zu bytes)",
            (unsigned)LIB_TPM_EK_CERT_NV_INDEX, t->ek_cert_len);
out:
    if (t->ek_cert == NULL)
        lib_log(PROV_LOG_WARN,
                "TPM: cannot read the EK certificate at NV index 0x%08x%s%s; "
                "going on without it",
                (unsigned)LIB_TPM_EK_CERT_NV_INDEX, rc != TSS2_RC_SUCCESS ? ": " : "",
                rc != TSS2_RC_SUCCESS ? Tss2_RC_Decode(rc) : "");
    Esys_Free(data);
    Esys_Free(nvpub);
    free(der);
    tr_close(t, &nv);
    return 0;
}

int lib_tpm_open(const char *tcti_conf, struct lib_tpm **out)
{
    struct lib_tpm *t;
    TPM2B_PUBLIC tmpl;
    const char *conf = tcti_conf != NULL && *tcti_conf != '\0' ? tcti_conf : NULL;
    TSS2_RC rc;
    uint32_t in_max;
    int r;

    *out = NULL;
    if ((t = calloc(1, sizeof(*t))) == NULL)
        return PROV_ENOMEM;
    t->ek = t->srk = ESYS_TR_NONE;
    rc = Tss2_TctiLdr_Initialize(conf, &t->tcti);
    if (rc != TSS2_RC_SUCCESS) {
        lib_log(PROV_LOG_ERROR, "TPM: cannot open TCTI '%s': %s", conf ? conf : "(default)",
                Tss2_RC_Decode(rc));
        r = PROV_EIO;
        goto fail;
    }
    rc = Esys_Initialize(&t->esys, t->tcti, NULL);
    if (rc != TSS2_RC_SUCCESS) {
        lib_log(PROV_LOG_ERROR, "TPM: cannot talk to the TPM through '%s': %s",
                conf ? conf : "(default)", Tss2_RC_Decode(rc));
        r = PROV_EIO;
        goto fail;
    }
    ek_template(&tmpl);
    if ((r = ensure_key(t, "EK", ESYS_TR_RH_ENDORSEMENT, &tmpl, LIB_TPM_EK_HANDLE, &t->ek,
                        t->ek_pub, &t->ek_pub_len)) != 0)
        goto fail;
    srk_template(&tmpl);
    if ((r = ensure_key(t, "SRK", ESYS_TR_RH_OWNER, &tmpl, LIB_TPM_SRK_HANDLE, &t->srk, t->srk_pub,
                        &t->srk_pub_len)) != 0)
        goto fail;
    if ((r = read_ek_cert(t)) != 0)
        goto fail;
    in_max = tpm_property(t, TPM2_PT_INPUT_BUFFER, 1024);
    t->input_max = in_max > sizeof(((TPM2B_MAX_BUFFER *)NULL)->buffer)
                       ? sizeof(((TPM2B_MAX_BUFFER *)NULL)->buffer)
                       : in_max;
    if (t->input_max < 64)
        t->input_max = 64;
    lib_log(PROV_LOG_DEBUG, "TPM: open through '%s'; EK %zu bytes, SRK %zu bytes, input buffer %zu",
            conf ? conf : "(default)", t->ek_pub_len, t->srk_pub_len, t->input_max);
    *out = t;
    return 0;
fail:
    lib_tpm_close(t);
    return r;
}

void lib_tpm_close(struct lib_tpm *t)
{
    if (t == NULL)
        return;
    if (t->esys != NULL)
        Esys_Finalize(&t->esys);
    if (t->tcti != NULL)
        Tss2_TctiLdr_Finalize(&t->tcti);
    free(t->ek_cert);
    prov_freezero(t, sizeof(*t));
}

const uint8_t *lib_tpm_ek_public(const struct lib_tpm *t, size_t *len)
{
    *len = t->ek_pub_len;
    return t->ek_pub;
}

const uint8_t *lib_tpm_srk_public(const struct lib_tpm *t, size_t *len)
{
    *len = t->srk_pub_len;
    return t->srk_pub;
}

const uint8_t *lib_tpm_ek_cert(const struct lib_tpm *t, size_t *len)
{
    *len = t->ek_cert_len;
    return t->ek_cert;
}

int lib_tpm_registration_id(const struct lib_tpm *t, char out[LIB_TPM_REGID_SIZE])
{
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
    uint8_t md[32];
    uint32_t acc = 0;
    size_t o = 0;
    int bits = 0;

    if (EVP_Digest(t->ek_pub, t->ek_pub_len, md, NULL, EVP_sha256(), NULL) != 1)
        return PROV_ECRYPTO;
    for (size_t i = 0; i < sizeof(md); i++) {
        acc = (acc << 8) | md[i];
        bits += 8;
        while (bits >= 5) {
            out[o++] = alphabet[(acc >> (bits - 5)) & 31];
            bits -= 5;
        }
    }
    if (bits > 0)
        out[o++] = alphabet[(acc << (5 - bits)) & 31];
    out[o] = '\0';
    return 0;
}

static int set_b64(json_t *o, const char *key, const uint8_t *data, size_t len)
{
    char *b64 = b64_encode_alloc(data, len);
    int r;

    if (b64 == NULL)
        return -1;
    r = json_object_set_new(o, key, json_string(b64));
    free(b64);
    return r;
}

json_t *lib_tpm_attestation_json(const struct lib_tpm *t)
{
    json_t *o = json_object();

    if (o == NULL || set_b64(o, "endorsementKey", t->ek_pub, t->ek_pub_len) != 0 ||
        set_b64(o, "storageRootKey", t->srk_pub, t->srk_pub_len) != 0 ||
        (t->ek_cert != NULL &&
         set_b64(o, "endorsementKeyCertificate", t->ek_cert, t->ek_cert_len) != 0)) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* The five TPM structures of a §5.2 blob (element #6 is skipped). */
struct blob {
    TPM2B_ID_OBJECT credential;
    TPM2B_ENCRYPTED_SECRET secret;
    TPM2B_PRIVATE duplicate;
    TPM2B_ENCRYPTED_SECRET seed;
    TPM2B_PUBLIC object;
};

static int parse_blob(const char *b64, struct blob *b)
{
    uint8_t *raw = NULL;
    size_t len = b64 ? strlen(b64) : 0, off = 0;
    int n, r = PROV_EPROTO;

    memset(b, 0, sizeof(*b));
    if (len == 0 || len > (LIB_TPM_BLOB_MAX / 3 + 1) * 4) {
        lib_log(PROV_LOG_ERROR, "TPM: authenticationKey is %s", len ? "too long" : "empty");
        return PROV_EPROTO;
    }
    if ((raw = malloc(b64_decoded_max(len))) == NULL)
        return PROV_ENOMEM;
    if ((n = b64_decode(b64, len, raw)) < 0) {
        lib_log(PROV_LOG_ERROR, "TPM: authenticationKey is not base64");
        goto out;
    }
    len = (size_t)n;
    if (Tss2_MU_TPM2B_ID_OBJECT_Unmarshal(raw, len, &off, &b->credential) != 0 ||
        Tss2_MU_TPM2B_ENCRYPTED_SECRET_Unmarshal(raw, len, &off, &b->secret) != 0 ||
        Tss2_MU_TPM2B_PRIVATE_Unmarshal(raw, len, &off, &b->duplicate) != 0 ||
        Tss2_MU_TPM2B_ENCRYPTED_SECRET_Unmarshal(raw, len, &off, &b->seed) != 0 ||
        Tss2_MU_TPM2B_PUBLIC_Unmarshal(raw, len, &off, &b->object) != 0) {
        lib_log(PROV_LOG_ERROR, "TPM: authenticationKey does not have the layout of an "
                                "activation blob (device protocol §5.2)");
        goto out;
    }
    /* #6, the encrypted data: may be empty, and some servers leave it out */
    if (off != len) {
        size_t extra = len - off < 2 ? 0 : ((size_t)raw[off] << 8 | raw[off + 1]);

        if (len - off < 2 || len - off - 2 != extra) {
            lib_log(PROV_LOG_ERROR,
                    "TPM: authenticationKey has %zu unexpected bytes at the "
                    "end",
                    len - off);
            goto out;
        }
    }
    r = 0;
out:
    free(raw);
    return r;
}

/* PolicySecret(endorsement) session + ActivateCredential: the inner wrapper key into *inner. */
static int activate(struct lib_tpm *t, const struct blob *b, TPM2B_DIGEST **inner)
{
    TPMT_SYM_DEF sym;
    TPM2B_NONCE nonce, ref;
    TPM2B_DIGEST cphash;
    TPM2B_TIMEOUT *timeout = NULL;
    TPMT_TK_AUTH *ticket = NULL;
    ESYS_TR session = ESYS_TR_NONE;
    TSS2_RC rc;
    int r = 0;

    memset(&sym, 0, sizeof(sym));
    memset(&nonce, 0, sizeof(nonce));
    memset(&ref, 0, sizeof(ref));
    memset(&cphash, 0, sizeof(cphash));
    sym.algorithm = TPM2_ALG_NULL;
    rc = Esys_StartAuthSession(t->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                               ESYS_TR_NONE, NULL, TPM2_SE_POLICY, &sym, TPM2_ALG_SHA256, &session);
    if (rc != TSS2_RC_SUCCESS)
        return tpm_fail("StartAuthSession(policy)", rc);
    rc = Esys_PolicySecret(t->esys, ESYS_TR_RH_ENDORSEMENT, session, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                           ESYS_TR_NONE, &nonce, &cphash, &ref, 0, &timeout, &ticket);
    Esys_Free(timeout);
    Esys_Free(ticket);
    if (rc != TSS2_RC_SUCCESS) {
        r = tpm_fail("PolicySecret(endorsement)", rc);
        goto out;
    }
    rc = Esys_ActivateCredential(t->esys, t->srk, t->ek, ESYS_TR_PASSWORD, session, ESYS_TR_NONE,
                                 &b->credential, &b->secret, inner);
    if (rc != TSS2_RC_SUCCESS) {
        tpm_fail("ActivateCredential", rc);
        lib_log(PROV_LOG_ERROR, "TPM: the activation blob was not made for this TPM's EK and "
                                "SRK, or it is damaged");
        r = PROV_ECRYPTO;
        goto out;
    }
    if ((*inner)->size != 16) {
        lib_log(PROV_LOG_ERROR,
                "TPM: the activated credential has %u bytes, not the 16 of "
                "an AES-128 inner wrapper key",
                (unsigned)(*inner)->size);
        prov_cleanse(*inner, sizeof(**inner));
        Esys_Free(*inner);
        *inner = NULL;
        r = PROV_EPROTO;
    }
out:
    flush(t, &session);
    return r;
}

/* Removes the key at 0x81000100, if any; errors are only logged (§5.3 step 4). */
static void evict_id_key(struct lib_tpm *t)
{
    ESYS_TR old = ESYS_TR_NONE, none = ESYS_TR_NONE;
    bool exists = false;
    TSS2_RC rc;

    if (handle_exists(t, LIB_TPM_ID_KEY_HANDLE, &exists) != 0 || !exists)
        return;
    rc = Esys_TR_FromTPMPublic(t->esys, LIB_TPM_ID_KEY_HANDLE, ESYS_TR_NONE, ESYS_TR_NONE,
                               ESYS_TR_NONE, &old);
    if (rc == TSS2_RC_SUCCESS)
        rc = Esys_EvictControl(t->esys, ESYS_TR_RH_OWNER, old, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                               ESYS_TR_NONE, LIB_TPM_ID_KEY_HANDLE, &none);
    if (rc != TSS2_RC_SUCCESS)
        lib_log(PROV_LOG_WARN, "TPM: removing the old key at 0x%08x failed: %s",
                (unsigned)LIB_TPM_ID_KEY_HANDLE, Tss2_RC_Decode(rc));
    /* ESAPI keeps the evicted object's record (with its Name) until it is closed */
    tr_close(t, &old);
    tr_close(t, &none);
}

int lib_tpm_import_blob(struct lib_tpm *t, const char *blob_b64)
{
    struct blob b;
    TPM2B_DIGEST *inner = NULL;
    TPM2B_DATA enc_key;
    TPMT_SYM_DEF_OBJECT sym;
    TPM2B_PRIVATE *priv = NULL;
    ESYS_TR loaded = ESYS_TR_NONE, persisted = ESYS_TR_NONE;
    TSS2_RC rc;
    int r;

    memset(&enc_key, 0, sizeof(enc_key));
    if ((r = parse_blob(blob_b64, &b)) != 0 || (r = activate(t, &b, &inner)) != 0)
        goto out;
    enc_key.size = inner->size;
    memcpy(enc_key.buffer, inner->buffer, inner->size);
    memset(&sym, 0, sizeof(sym));
    sym.algorithm = TPM2_ALG_AES;
    sym.keyBits.aes = 128;
    sym.mode.aes = TPM2_ALG_CFB;
    rc = Esys_Import(t->esys, t->srk, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &enc_key,
                     &b.object, &b.duplicate, &b.seed, &sym, &priv);
    if (rc != TSS2_RC_SUCCESS) {
        r = tpm_fail("Import", rc);
        goto out;
    }
    rc = Esys_Load(t->esys, t->srk, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, priv, &b.object,
                   &loaded);
    if (rc != TSS2_RC_SUCCESS) {
        r = tpm_fail("Load", rc);
        goto out;
    }
    evict_id_key(t);
    rc = Esys_EvictControl(t->esys, ESYS_TR_RH_OWNER, loaded, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                           ESYS_TR_NONE, LIB_TPM_ID_KEY_HANDLE, &persisted);
    if (rc != TSS2_RC_SUCCESS) {
        r = tpm_fail("EvictControl (persisting the imported key)", rc);
        goto out;
    }
    lib_log(PROV_LOG_INFO, "TPM: key imported and persisted at 0x%08x",
            (unsigned)LIB_TPM_ID_KEY_HANDLE);
out:
    flush(t, &loaded);
    tr_close(t, &persisted);
    prov_cleanse(&enc_key, sizeof(enc_key));
    if (inner != NULL) {
        prov_cleanse(inner, sizeof(*inner));
        Esys_Free(inner);
    }
    if (priv != NULL) {
        prov_cleanse(priv, sizeof(*priv));
        Esys_Free(priv);
    }
    prov_cleanse(&b, sizeof(b));
    return r;
}

/* HMAC_Start + SequenceUpdate... + SequenceComplete, for inputs above the input buffer. */
static int hmac_sequence(struct lib_tpm *t, ESYS_TR key, const uint8_t *p, size_t len,
                         TPM2B_DIGEST **out)
{
    TPM2B_AUTH auth;
    TPM2B_MAX_BUFFER chunk;
    TPMT_TK_HASHCHECK *check = NULL;
    ESYS_TR seq = ESYS_TR_NONE;
    TSS2_RC rc;
    int r = 0;

    memset(&auth, 0, sizeof(auth));
    rc = Esys_HMAC_Start(t->esys, key, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &auth,
                         TPM2_ALG_SHA256, &seq);
    if (rc != TSS2_RC_SUCCESS)
        return tpm_fail("HMAC_Start", rc);
    while (len > t->input_max) {
        chunk.size = (UINT16)t->input_max;
        memcpy(chunk.buffer, p, t->input_max);
        rc =
            Esys_SequenceUpdate(t->esys, seq, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &chunk);
        if (rc != TSS2_RC_SUCCESS) {
            r = tpm_fail("SequenceUpdate", rc);
            goto out;
        }
        p += t->input_max;
        len -= t->input_max;
    }
    chunk.size = (UINT16)len;
    memcpy(chunk.buffer, p, len);
    rc = Esys_SequenceComplete(t->esys, seq, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &chunk,
                               ESYS_TR_RH_NULL, out, &check);
    Esys_Free(check);
    if (rc != TSS2_RC_SUCCESS) {
        r = tpm_fail("SequenceComplete", rc);
        goto out;
    }
    seq = ESYS_TR_NONE; /* SequenceComplete flushed it */
out:
    flush(t, &seq);
    prov_cleanse(&chunk, sizeof(chunk));
    return r;
}

int lib_tpm_hmac(struct lib_tpm *t, const void *data, size_t len, uint8_t mac[32])
{
    TPM2B_MAX_BUFFER buf;
    TPM2B_DIGEST *out = NULL;
    ESYS_TR key = ESYS_TR_NONE;
    bool exists = false;
    TSS2_RC rc;
    int r;

    if ((r = handle_exists(t, LIB_TPM_ID_KEY_HANDLE, &exists)) != 0)
        return r;
    if (!exists) {
        lib_log(PROV_LOG_ERROR,
                "TPM: no key at 0x%08x: the device has not registered with "
                "this TPM yet",
                (unsigned)LIB_TPM_ID_KEY_HANDLE);
        return PROV_ENOTFOUND;
    }
    rc = Esys_TR_FromTPMPublic(t->esys, LIB_TPM_ID_KEY_HANDLE, ESYS_TR_NONE, ESYS_TR_NONE,
                               ESYS_TR_NONE, &key);
    if (rc != TSS2_RC_SUCCESS)
        return tpm_fail("reading the key at 0x81000100", rc);
    if (len <= t->input_max) {
        buf.size = (UINT16)len;
        if (len > 0)
            memcpy(buf.buffer, data, len);
        rc = Esys_HMAC(t->esys, key, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &buf,
                       TPM2_ALG_SHA256, &out);
        prov_cleanse(&buf, sizeof(buf));
        r = rc == TSS2_RC_SUCCESS ? 0 : tpm_fail("HMAC", rc);
    } else {
        r = hmac_sequence(t, key, data, len, &out);
    }
    if (r == 0 && out->size != 32) {
        lib_log(PROV_LOG_ERROR, "TPM: HMAC of %u bytes, expected 32 (SHA-256)",
                (unsigned)out->size);
        r = PROV_ECRYPTO;
    }
    if (r == 0)
        memcpy(mac, out->buffer, 32);
    if (out != NULL) {
        prov_cleanse(out, sizeof(*out));
        Esys_Free(out);
    }
    tr_close(t, &key);
    return r;
}
