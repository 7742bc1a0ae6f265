/*
 * Enrollment and enrollment-group documents: validation of what clients send,
 * the normalised form that is stored, and what clients get back. See model.h
 * for the stored shape.
 */
#include "model.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/errors.h"
#include "../common/limits.h"
#include "../common/util.h"
#include "tpm_blob.h"
#include "x509.h"

#define MAX_DEVICE_ID 128

static void wipe_string(json_t *s);

static const char *const attestation_types[] = {"none", "tpm", "x509", "symmetricKey"};
static const char *const allocation_policies[] = {"hashed", "geoLatency", "static", "custom"};
static const char *const provisioning_statuses[] = {"enabled", "disabled"};

/* Members the model interprets; anything else is kept opaquely. */
static const char *const common_members[] = {
    "attestation", "capabilities", "iotHubHostName", "initialTwin", "provisioningStatus",
    "reprovisionPolicy", "allocationPolicy", "iotHubs", "customAllocationDefinition",
    /* read-only members: ignored in requests */
    "etag", "createdDateTimeUtc", "lastUpdatedDateTimeUtc", "registrationState",
    MODEL_PRIVATE,
};
static const char *const individual_members[] = {
    "registrationId", "deviceId", "optionalDeviceInformation",
};

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err != NULL && errlen > 0) {
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return PROV_EINVAL;
}

static const char *canon(const char *const *table, size_t n, const char *s)
{
    if (s == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (str_ieq(table[i], s))
            return table[i];
    }
    return NULL;
}

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

const char *model_attestation_type(const char *s)
{
    return canon(attestation_types, NELEM(attestation_types), s);
}

const char *model_allocation_policy(const char *s)
{
    return canon(allocation_policies, NELEM(allocation_policies), s);
}

const char *model_provisioning_status(const char *s)
{
    return canon(provisioning_statuses, NELEM(provisioning_statuses), s);
}

int model_bulk_mode(const char *s, enum model_bulk_mode *out)
{
    if (s == NULL)
        return PROV_EINVAL;
    if (str_ieq(s, "create"))
        *out = BULK_CREATE;
    else if (str_ieq(s, "update"))
        *out = BULK_UPDATE;
    else if (str_ieq(s, "updateIfMatchETag")) /* also Node's "updateIfMatchEtag" */
        *out = BULK_UPDATE_IF_MATCH;
    else if (str_ieq(s, "delete"))
        *out = BULK_DELETE;
    else
        return PROV_EINVAL;
    return 0;
}

const char *model_id_member(enum store_kind kind)
{
    return kind == STORE_GROUP ? "enrollmentGroupId" : "registrationId";
}

static bool in_list(const char *const *list, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(list[i], s) == 0)
            return true;
    }
    return false;
}

static bool is_known_member(enum store_kind kind, const char *key)
{
    if (in_list(common_members, NELEM(common_members), key))
        return true;
    if (kind == STORE_GROUP)
        return strcmp(key, "enrollmentGroupId") == 0;
    return in_list(individual_members, NELEM(individual_members), key);
}

/* A member of obj, or NULL when absent or JSON null (null means absent). */
static json_t *member(const json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);

    return json_is_null(v) ? NULL : v;
}

static const char *type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER:
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "unknown";
}

int model_parse_object(const char *body, size_t len, bool allow_empty, json_t **out, char *err,
                       size_t errlen)
{
    json_error_t jerr;
    json_t *j;
    size_t i;

    *out = NULL;
    for (i = 0; i < len; i++) {
        if (body[i] != ' ' && body[i] != '\t' && body[i] != '\r' && body[i] != '\n')
            break;
    }
    if (i == len) {
        if (allow_empty)
            return 0;
        fail(err, errlen, "the request body is empty; a JSON object is required");
        return PROV_EPROTO;
    }
    j = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (j == NULL) {
        fail(err, errlen, "malformed JSON body: %s (line %d, column %d)", jerr.text, jerr.line,
             jerr.column);
        return PROV_EPROTO;
    }
    if (!json_is_object(j)) {
        fail(err, errlen, "the request body must be a JSON object, not %s", type_name(j));
        json_decref(j);
        return PROV_EPROTO;
    }
    *out = j;
    return 0;
}

/* Base64 that decodes to between min and max bytes (max 0 = no upper bound). */
static bool b64_ok(const char *s, size_t min, size_t max)
{
    size_t len = strlen(s);
    uint8_t *buf;
    int n;

    if (len == 0 || len > PROV_MAX_BODY)
        return false;
    buf = malloc(b64_decoded_max(len));
    if (buf == NULL)
        return false;
    n = b64_decode(s, len, buf);
    prov_freezero(buf, b64_decoded_max(len));
    return n > 0 && (size_t)n >= min && (max == 0 || (size_t)n <= max);
}

/*
 * A TPM key of an enrollment is the device's TPM2B_PUBLIC, base64 (what the
 * device sends and what DPS's tooling prints): an RSA-2048 restricted
 * decryption key with SHA-256 names and AES-128-CFB, as EK and SRK are.
 */
static int check_tpm_public(const json_t *v, const char *what, char *err, size_t errlen)
{
    const char *text = json_string_value(v);
    size_t len = strlen(text);
    uint8_t *raw = malloc(b64_decoded_max(len));
    struct tpm_public pub;
    const char *why = NULL;
    int n, r;

    if (raw == NULL)
        return PROV_ENOMEM;
    n = b64_decode(text, len, raw);
    r = n > 0 ? tpm_public_parse(raw, (size_t)n, TPM_PUBLIC_PARENT, &pub, &why) : PROV_EPROTO;
    free(raw);
    if (r == PROV_ENOMEM || r == PROV_ECRYPTO)
        return r;
    if (r != 0)
        return fail(err, errlen,
                    "attestation.tpm.%s is not an RSA-2048 TPM2B_PUBLIC of an EK or SRK: %s", what,
                    why != NULL ? why : "not base64");
    return 0;
}

static int generate_key(json_t *obj, const char *name)
{
    uint8_t raw[PROV_GENERATED_KEY_BYTES];
    char b64[4 * ((PROV_GENERATED_KEY_BYTES + 2) / 3) + 1];
    int r;

    if ((r = random_bytes(raw, sizeof(raw))) != 0)
        return r;
    b64_encode(raw, sizeof(raw), b64);
    r = json_object_set_new(obj, name, json_string(b64)) == 0 ? 0 : PROV_ENOMEM;
    prov_cleanse(raw, sizeof(raw));
    prov_cleanse(b64, sizeof(b64));
    return r;
}

/* Copies the members of src not named in skip into dst (shallow, by reference). */
static int copy_other_members(json_t *dst, const json_t *src, const char *const *skip,
                              size_t nskip)
{
    const char *key;
    json_t *v;

    json_object_foreach((json_t *)src, key, v) {
        if (in_list(skip, nskip, key))
            continue;
        if (json_object_set_new(dst, key, json_deep_copy(v)) != 0)
            return PROV_ENOMEM;
    }
    return 0;
}

static int prepare_symmetric_key(const json_t *sub, const json_t *existing, json_t *att,
                                 char *err, size_t errlen)
{
    static const char *const names[] = {"primaryKey", "secondaryKey"};
    const json_t *old = NULL;
    json_t *sk = json_object();
    int r = PROV_ENOMEM;

    if (sk == NULL)
        return PROV_ENOMEM;
    if (existing != NULL) {
        const json_t *oa = member(existing, "attestation");
        const json_t *ot = member(oa, "type");

        if (json_is_string(ot) && strcmp(json_string_value(ot), "symmetricKey") == 0)
            old = member(oa, "symmetricKey");
    }
    for (size_t i = 0; i < NELEM(names); i++) {
        const json_t *v = sub != NULL ? member(sub, names[i]) : NULL;
        const json_t *ov = old != NULL ? member(old, names[i]) : NULL;

        /* an empty string is what some clients send for "none given" */
        if (v != NULL && json_is_string(v) && json_string_length(v) == 0)
            v = NULL;
        if (v != NULL) {
            if (!json_is_string(v)) {
                r = fail(err, errlen, "attestation.symmetricKey.%s must be a string", names[i]);
                goto out;
            }
            if (!b64_ok(json_string_value(v), PROV_MIN_KEY_BYTES, PROV_MAX_KEY_BYTES)) {
                r = fail(err, errlen,
                         "attestation.symmetricKey.%s must be base64 of %d to %d bytes", names[i],
                         PROV_MIN_KEY_BYTES, PROV_MAX_KEY_BYTES);
                goto out;
            }
            if (json_object_set_new(sk, names[i], json_string(json_string_value(v))) != 0)
                goto out;
        } else if (json_is_string(ov) && json_string_length(ov) > 0) {
            /*
             * An update without keys keeps the stored ones. Azure generates new
             * keys here; keeping them is safer (a client that round-trips a GET
             * answer, which has no keys, would otherwise lock its devices out).
             */
            if (json_object_set_new(sk, names[i], json_string(json_string_value(ov))) != 0)
                goto out;
        } else if ((r = generate_key(sk, names[i])) != 0) {
            goto out;
        }
    }
    if (sub != NULL && (r = copy_other_members(sk, sub, names, NELEM(names))) != 0)
        goto out;
    r = json_object_set_new(att, "symmetricKey", sk) == 0 ? 0 : PROV_ENOMEM;
    sk = NULL;
out:
    model_json_free(sk);
    return r;
}

/* ---- X.509 attestation ---- */

/*
 * A thumbprint as a client may write it (hex, any case, ':' or ' ' between
 * bytes) normalised to upper-case hex without separators; `want` hex digits
 * (40 for SHA-1, 64 for SHA-256). 0 or PROV_EINVAL.
 */
static int thumbprint_norm(const char *s, size_t want, char *out, size_t outlen)
{
    size_t n = 0;

    if (outlen <= want)
        return PROV_EINVAL;
    for (; *s != '\0'; s++) {
        char c = *s;

        if (c == ':' || c == ' ')
            continue;
        if (c >= 'a' && c <= 'f')
            c = (char)(c - 'a' + 'A');
        if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'F')) || n == want)
            return PROV_EINVAL;
        out[n++] = c;
    }
    if (n != want)
        return PROV_EINVAL;
    out[n] = '\0';
    return 0;
}

/* Slot of the stored x509 object of existing (when it is an X.509 entity), or NULL. */
static const json_t *old_x509_slot(const json_t *existing, const char *kind, const char *slot)
{
    const json_t *oa = member(existing, "attestation");
    const json_t *ot = member(oa, "type");

    if (!json_is_string(ot) || strcmp(json_string_value(ot), "x509") != 0)
        return NULL;
    return member(member(member(oa, "x509"), kind), slot);
}

/*
 * One X509CertificateWithInfo of a request, as stored:
 *  - {"certificate": PEM or base64 DER} -> {"certificate": PEM, "info": x509_info}
 *    (a client's own "info" is ignored: the server computes it);
 *  - {"info": {...}} without a certificate where one is stored in the same
 *    slot: "keep the stored certificate" (the Azure CLI sends info-only
 *    objects for certificates it leaves alone); thumbprints the info carries
 *    must match the stored certificate;
 *  - pin (individual clientCertificates only): {"info": {"sha256Thumbprint"
 *    and/or "sha1Thumbprint"}} with no certificate -> stored as
 *    {"info": {<the given thumbprints, upper-case hex without separators>}};
 *    the device's leaf must then match them. An info-only entry without
 *    thumbprints keeps a stored pin.
 */
static int prepare_cert_entry(const char *kind, const char *slot, const json_t *entry,
                              const json_t *old, bool allow_pin, bool require_ca, json_t **out,
                              char *err, size_t errlen)
{
    static const char *const tp_names[] = {"sha256Thumbprint", "sha1Thumbprint"};
    static const size_t tp_len[] = {64, 40};
    const json_t *cert = member(entry, "certificate");
    const json_t *info = member(entry, "info");
    const json_t *old_cert = member(old, "certificate");
    char tps[2][65];
    bool have_tp[2] = {false, false};
    const char *why = NULL;
    X509 *x = NULL;
    char *pem = NULL;
    json_t *o = NULL, *in = NULL;
    int r = PROV_ENOMEM;

    *out = NULL;
    if (!json_is_object(entry))
        return fail(err, errlen, "attestation.x509.%s.%s must be an object", kind, slot);
    if (cert != NULL) {
        if (!json_is_string(cert) || json_string_length(cert) == 0)
            return fail(err, errlen, "attestation.x509.%s.%s.certificate must be a string "
                        "(PEM or base64 DER)", kind, slot);
        if ((x = x509_parse_one(json_string_value(cert), &why)) == NULL)
            return fail(err, errlen, "attestation.x509.%s.%s.certificate: %s", kind, slot,
                        why != NULL ? why : "not a certificate");
        if (require_ca && !x509_is_ca(x)) {
            r = fail(err, errlen, "attestation.x509.%s.%s.certificate is not a CA certificate "
                     "(a signing certificate needs basic constraints CA:TRUE)", kind, slot);
            goto out;
        }
        if ((pem = x509_to_pem(x)) == NULL || (in = x509_info(x)) == NULL)
            goto out;
        o = json_pack("{s:s, s:O}", "certificate", pem, "info", in);
        if (o == NULL)
            goto out;
        goto done;
    }
    if (info != NULL && !json_is_object(info))
        return fail(err, errlen, "attestation.x509.%s.%s.info must be an object", kind, slot);
    for (size_t i = 0; i < 2; i++) {
        const json_t *v = member(info, tp_names[i]);

        if (v == NULL)
            continue;
        if (!json_is_string(v) ||
            thumbprint_norm(json_string_value(v), tp_len[i], tps[i], sizeof(tps[i])) != 0)
            return fail(err, errlen, "attestation.x509.%s.%s.info.%s must be %zu hex digits",
                        kind, slot, tp_names[i], tp_len[i]);
        have_tp[i] = true;
    }
    if (json_is_string(old_cert)) {
        /* keep the stored certificate; the thumbprints sent must be its own */
        if ((x = x509_parse_one(json_string_value(old_cert), &why)) == NULL) {
            r = fail(err, errlen, "attestation.x509.%s.%s: the stored certificate is unreadable; "
                     "send the certificate", kind, slot);
            goto out;
        }
        for (size_t i = 0; i < 2; i++) {
            if (have_tp[i] && !x509_thumbprint_matches(x, tps[i])) {
                r = fail(err, errlen, "attestation.x509.%s.%s.info.%s does not match the stored "
                         "certificate; send the new certificate to replace it", kind, slot,
                         tp_names[i]);
                goto out;
            }
        }
        if ((o = json_deep_copy(old)) == NULL)
            goto out;
        goto done;
    }
    if (allow_pin && (have_tp[0] || have_tp[1])) {
        if ((in = json_object()) == NULL)
            goto out;
        for (size_t i = 0; i < 2; i++) {
            if (have_tp[i] && json_object_set_new(in, tp_names[i], json_string(tps[i])) != 0)
                goto out;
        }
        if ((o = json_pack("{s:O}", "info", in)) == NULL)
            goto out;
        goto done;
    }
    if (allow_pin && old != NULL && json_is_object(member(old, "info"))) {
        /* an info-only round trip of a stored pin */
        if ((o = json_deep_copy(old)) == NULL)
            goto out;
        goto done;
    }
    r = fail(err, errlen, "attestation.x509.%s.%s needs a certificate (PEM or base64 DER)%s",
             kind, slot, allow_pin ? " or a sha256Thumbprint/sha1Thumbprint in info" : "");
    goto out;
done:
    *out = o;
    o = NULL;
    r = 0;
out:
    json_decref(o);
    json_decref(in);
    free(pem);
    X509_free(x);
    return r;
}

/* A certificate pair (clientCertificates, signingCertificates) or caReferences, as stored. */
static int prepare_x509_pair(const json_t *sub, const char *kind, const json_t *existing,
                             bool allow_pin, bool require_ca, json_t *dst, char *err,
                             size_t errlen)
{
    static const char *const slots[] = {"primary", "secondary"};
    const json_t *pair = member(sub, kind);
    bool refs = strcmp(kind, "caReferences") == 0;
    json_t *o;
    int r;

    if (!json_is_object(pair))
        return fail(err, errlen, "attestation.x509.%s must be an object", kind);
    if (member(pair, "primary") == NULL)
        return fail(err, errlen, "attestation.x509.%s.primary is required", kind);
    if ((o = json_object()) == NULL)
        return PROV_ENOMEM;
    for (size_t i = 0; i < NELEM(slots); i++) {
        const json_t *c = member(pair, slots[i]);
        json_t *entry = NULL;

        if (c == NULL)
            continue;
        if (refs) {
            if (!json_is_string(c) || !model_ca_name_valid(json_string_value(c))) {
                json_decref(o);
                return fail(err, errlen, "attestation.x509.%s.%s must be a CA name (1 to %d "
                            "letters, digits and - _ .)", kind, slots[i], MODEL_CA_NAME_MAX);
            }
            entry = json_string(json_string_value(c));
        } else if ((r = prepare_cert_entry(kind, slots[i], c,
                                           old_x509_slot(existing, kind, slots[i]), allow_pin,
                                           require_ca, &entry, err, errlen)) != 0) {
            json_decref(o);
            return r;
        }
        if (entry == NULL || json_object_set_new(o, slots[i], entry) != 0) {
            json_decref(o);
            return PROV_ENOMEM;
        }
    }
    return json_object_set_new(dst, kind, o) == 0 ? 0 : PROV_ENOMEM;
}

/*
 * attestation.x509: individual enrollments take clientCertificates (the
 * device's own certificate, or its thumbprint); groups take exactly one of
 * signingCertificates (CA certificates held in the group) and caReferences
 * (names in the scope's CA store; their existence is checked by the service
 * layer, which has the store).
 */
static int prepare_x509(enum store_kind kind, const json_t *sub, const json_t *existing,
                        json_t *att, char *err, size_t errlen)
{
    static const char *const kinds[] = {"clientCertificates", "signingCertificates",
                                        "caReferences"};
    bool has_client = member(sub, kinds[0]) != NULL;
    bool has_signing = member(sub, kinds[1]) != NULL;
    bool has_refs = member(sub, kinds[2]) != NULL;
    json_t *x = NULL;
    int r = PROV_ENOMEM;

    if (sub == NULL)
        return fail(err, errlen, "attestation.x509 is required for type x509");
    if (!has_client && !has_signing && !has_refs)
        return fail(err, errlen, "attestation.x509 needs clientCertificates, "
                                 "signingCertificates or caReferences");
    if (kind == STORE_ENROLLMENT && (has_signing || has_refs))
        return fail(err, errlen, "attestation.x509.%s is for enrollment groups; an individual "
                    "enrollment takes clientCertificates", has_signing ? kinds[1] : kinds[2]);
    if (kind == STORE_ENROLLMENT && !has_client)
        return fail(err, errlen, "attestation.x509.clientCertificates is required");
    if (kind == STORE_GROUP && has_client)
        return fail(err, errlen, "attestation.x509.clientCertificates is for individual "
                    "enrollments; a group takes signingCertificates or caReferences");
    if (kind == STORE_GROUP && has_signing && has_refs)
        return fail(err, errlen, "attestation.x509 takes signingCertificates or caReferences, "
                                 "not both");
    if ((x = json_object()) == NULL)
        return PROV_ENOMEM;
    for (size_t i = 0; i < NELEM(kinds); i++) {
        if (member(sub, kinds[i]) == NULL)
            continue;
        if ((r = prepare_x509_pair(sub, kinds[i], existing, i == 0, i == 1, x, err,
                                   errlen)) != 0)
            goto out;
    }
    if ((r = copy_other_members(x, sub, kinds, NELEM(kinds))) != 0)
        goto out;
    r = json_object_set_new(att, "x509", x) == 0 ? 0 : PROV_ENOMEM;
    x = NULL;
out:
    json_decref(x);
    return r;
}

/*
 * attestation.tpm of a TPM enrollment group (a provd extension; DPS has no
 * TPM groups): {"endorsementCertificateAuthorities": [...]}, 1 to
 * MODEL_MAX_TPM_GROUP_CAS CA certificates (PEM or base64 DER; basic
 * constraints CA:TRUE), the TPM manufacturers' roots or intermediates that
 * issue EK certificates. Stored as PEM; other members are kept.
 */
static int prepare_tpm_group(const json_t *sub, json_t *att, char *err, size_t errlen)
{
    static const char *const known[] = {"endorsementCertificateAuthorities"};
    static const char *const individual[] = {"endorsementKey", "storageRootKey"};
    const json_t *cas = member(sub, known[0]);
    const json_t *v;
    json_t *t = NULL, *list = NULL;
    size_t i;
    int r = PROV_ENOMEM;

    for (i = 0; i < NELEM(individual); i++) {
        if (member(sub, individual[i]) != NULL)
            return fail(err, errlen, "attestation.tpm.%s is for individual enrollments; a TPM "
                        "enrollment group takes endorsementCertificateAuthorities",
                        individual[i]);
    }
    if (cas == NULL)
        return fail(err, errlen, "attestation.tpm.endorsementCertificateAuthorities is required "
                    "for a TPM enrollment group");
    if (!json_is_array(cas) || json_array_size(cas) == 0 ||
        json_array_size(cas) > MODEL_MAX_TPM_GROUP_CAS)
        return fail(err, errlen, "attestation.tpm.endorsementCertificateAuthorities must be an "
                    "array of 1 to %d CA certificates (PEM or base64 DER)",
                    MODEL_MAX_TPM_GROUP_CAS);
    if ((list = json_array()) == NULL)
        return PROV_ENOMEM;
    json_array_foreach(cas, i, v) {
        const char *why = NULL;
        X509 *x = json_is_string(v) ? x509_parse_one(json_string_value(v), &why) : NULL;
        char *pem;

        if (x == NULL) {
            r = fail(err, errlen, "attestation.tpm.endorsementCertificateAuthorities[%zu]: %s", i,
                     why != NULL ? why : "must be a certificate (PEM or base64 DER)");
            goto out;
        }
        if (!x509_is_ca(x)) {
            X509_free(x);
            r = fail(err, errlen, "attestation.tpm.endorsementCertificateAuthorities[%zu] is not "
                     "a CA certificate (it needs basic constraints CA:TRUE)", i);
            goto out;
        }
        pem = x509_to_pem(x);
        X509_free(x);
        if (pem == NULL || json_array_append_new(list, json_string(pem)) != 0) {
            free(pem);
            r = PROV_ENOMEM;
            goto out;
        }
        free(pem);
    }
    if ((t = json_object()) == NULL || json_object_set(t, known[0], list) != 0)
        goto out;
    if ((r = copy_other_members(t, sub, known, NELEM(known))) != 0)
        goto out;
    r = json_object_set_new(att, "tpm", t) == 0 ? 0 : PROV_ENOMEM;
    t = NULL;
out:
    json_decref(t);
    json_decref(list);
    return r;
}

static int prepare_attestation(enum store_kind kind, const json_t *body, const json_t *existing,
                               json_t *doc, const char **type_out, char *err, size_t errlen)
{
    static const char *const subs[] = {"tpm", "x509", "symmetricKey"};
    static const char *const skip[] = {"type", "tpm", "x509", "symmetricKey"};
    const json_t *a = member(body, "attestation");
    const json_t *t, *sub;
    const char *type;
    json_t *att = NULL;
    int r = PROV_ENOMEM;

    if (a == NULL)
        return fail(err, errlen, "attestation is required");
    if (!json_is_object(a))
        return fail(err, errlen, "attestation must be an object, not %s", type_name(a));
    t = member(a, "type");
    if (t == NULL)
        return fail(err, errlen, "attestation.type is required");
    if (!json_is_string(t))
        return fail(err, errlen, "attestation.type must be a string");
    type = model_attestation_type(json_string_value(t));
    if (type == NULL)
        return fail(err, errlen, "attestation.type must be none, tpm, x509 or symmetricKey");
    for (size_t i = 0; i < NELEM(subs); i++) {
        const json_t *s = member(a, subs[i]);

        if (s == NULL)
            continue;
        if (strcmp(subs[i], type) != 0)
            return fail(err, errlen, "attestation type '%s' does not match its '%s' object",
                        type, subs[i]);
        if (!json_is_object(s))
            return fail(err, errlen, "attestation.%s must be an object", subs[i]);
    }
    sub = strcmp(type, "none") == 0 ? NULL : member(a, type);
    if ((att = json_object()) == NULL)
        return PROV_ENOMEM;
    if (json_object_set_new(att, "type", json_string(type)) != 0)
        goto out;
    if (strcmp(type, "tpm") == 0 && kind == STORE_GROUP) {
        if ((r = prepare_tpm_group(sub, att, err, errlen)) != 0)
            goto out;
    } else if (strcmp(type, "tpm") == 0) {
        const json_t *ek = member(sub, "endorsementKey");
        const json_t *srk = member(sub, "storageRootKey");

        if (sub == NULL || ek == NULL) {
            r = fail(err, errlen, "attestation.tpm.endorsementKey is required");
            goto out;
        }
        if (!json_is_string(ek) || !b64_ok(json_string_value(ek), 1, 0)) {
            r = fail(err, errlen, "attestation.tpm.endorsementKey must be base64");
            goto out;
        }
        if (srk != NULL && (!json_is_string(srk) || !b64_ok(json_string_value(srk), 1, 0))) {
            r = fail(err, errlen, "attestation.tpm.storageRootKey must be base64");
            goto out;
        }
        if ((r = check_tpm_public(ek, "endorsementKey", err, errlen)) != 0 ||
            (srk != NULL && (r = check_tpm_public(srk, "storageRootKey", err, errlen)) != 0))
            goto out;
        if (json_object_set_new(att, "tpm", json_deep_copy(sub)) != 0)
            goto out;
    } else if (strcmp(type, "x509") == 0) {
        if ((r = prepare_x509(kind, sub, existing, att, err, errlen)) != 0)
            goto out;
    } else if (strcmp(type, "symmetricKey") == 0) {
        if ((r = prepare_symmetric_key(sub, existing, att, err, errlen)) != 0)
            goto out;
    }
    if ((r = copy_other_members(att, a, skip, NELEM(skip))) != 0)
        goto out;
    r = json_object_set_new(doc, "attestation", att) == 0 ? 0 : PROV_ENOMEM;
    att = NULL;
    *type_out = type;
out:
    model_json_free(att);
    return r;
}

/* The configured spelling of hub host name s, or NULL. */
static const char *find_hub(const struct cfg_hub *hubs, size_t nhubs, const char *s)
{
    for (size_t i = 0; i < nhubs; i++) {
        if (str_ieq(hubs[i].hostname, s))
            return hubs[i].hostname;
    }
    return NULL;
}

/*
 * IoT Hub device ids: up to 128 ASCII alphanumerics and - . + % _ # * ? ! ( ) , : = @ $ '
 * (the set IoT Hub accepts; it also keeps the id safe for MQTT topics).
 */
static bool device_id_ok(const char *s)
{
    size_t len = strlen(s);

    if (len == 0 || len > MAX_DEVICE_ID)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              strchr("-.+%_#*?!(),:=@$'", c) != NULL))
            return false;
    }
    return true;
}

static int set_bool_object(json_t *doc, const json_t *src, const char *name,
                           const char *const *fields, const bool *defaults, size_t n, char *err,
                           size_t errlen)
{
    json_t *o;
    int r;

    if (src != NULL && !json_is_object(src))
        return fail(err, errlen, "%s must be an object, not %s", name, type_name(src));
    if ((o = json_object()) == NULL)
        return PROV_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const json_t *v = src != NULL ? member(src, fields[i]) : NULL;

        if (v != NULL && !json_is_boolean(v)) {
            json_decref(o);
            return fail(err, errlen, "%s.%s must be a boolean", name, fields[i]);
        }
        if (json_object_set_new(o, fields[i],
                                json_boolean(v != NULL ? json_is_true(v) : defaults[i])) != 0) {
            json_decref(o);
            return PROV_ENOMEM;
        }
    }
    if (src != NULL && (r = copy_other_members(o, src, fields, n)) != 0) {
        json_decref(o);
        return r;
    }
    return json_object_set_new(doc, name, o) == 0 ? 0 : PROV_ENOMEM;
}

static int prepare_hubs(const json_t *body, json_t *doc, const struct cfg_hub *hubs,
                        size_t nhubs, const char **single, size_t *count, char *err,
                        size_t errlen)
{
    const json_t *list = member(body, "iotHubs");
    const json_t *legacy = member(body, "iotHubHostName");
    const char *legacy_hub = NULL;
    json_t *out = NULL;
    size_t i;
    const json_t *v;

    *single = NULL;
    *count = 0;
    if (legacy != NULL) {
        if (!json_is_string(legacy))
            return fail(err, errlen, "iotHubHostName must be a string");
        legacy_hub = find_hub(hubs, nhubs, json_string_value(legacy));
        if (legacy_hub == NULL)
            return fail(err, errlen, "iotHubHostName '%.256s' is not a linked hub",
                        json_string_value(legacy));
        if (json_object_set_new(doc, "iotHubHostName", json_string(legacy_hub)) != 0)
            return PROV_ENOMEM;
        *single = legacy_hub;
        *count = 1;
    }
    if (list == NULL)
        return 0;
    if (!json_is_array(list))
        return fail(err, errlen, "iotHubs must be an array, not %s", type_name(list));
    if ((out = json_array()) == NULL)
        return PROV_ENOMEM;
    json_array_foreach(list, i, v) {
        const char *hub;
        bool dup = false;

        if (!json_is_string(v)) {
            json_decref(out);
            return fail(err, errlen, "iotHubs[%zu] must be a string", i);
        }
        hub = find_hub(hubs, nhubs, json_string_value(v));
        if (hub == NULL) {
            json_decref(out);
            return fail(err, errlen, "iotHubs[%zu] '%.256s' is not a linked hub", i,
                        json_string_value(v));
        }
        for (size_t k = 0; k < json_array_size(out); k++)
            dup = dup || strcmp(json_string_value(json_array_get(out, k)), hub) == 0;
        if (dup)
            continue;
        if (json_array_append_new(out, json_string(hub)) != 0) {
            json_decref(out);
            return PROV_ENOMEM;
        }
        if (*single == NULL || strcmp(*single, hub) != 0)
            (*count)++;
        if (*single == NULL)
            *single = hub;
    }
    return json_object_set_new(doc, "iotHubs", out) == 0 ? 0 : PROV_ENOMEM;
}

static bool url_ok(const char *s)
{
    size_t skip;

    if (str_ieqn(s, "https://", 8))
        skip = 8;
    else if (str_ieqn(s, "http://", 7))
        skip = 7;
    else
        return false;
    if (s[skip] == '\0' || s[skip] == '/')
        return false;
    for (; *s; s++) {
        if ((unsigned char)*s <= ' ' || (unsigned char)*s >= 0x7f)
            return false;
    }
    return true;
}

static int prepare_custom(const json_t *body, json_t *doc, bool required, char *err,
                          size_t errlen)
{
    static const char *const fields[] = {"webhookUrl", "apiVersion"};
    const json_t *c = member(body, "customAllocationDefinition");
    const json_t *url, *ver;
    json_t *o;
    int r;

    if (c == NULL) {
        if (required)
            return fail(err, errlen, "allocationPolicy custom needs customAllocationDefinition");
        return 0;
    }
    if (!json_is_object(c))
        return fail(err, errlen, "customAllocationDefinition must be an object");
    url = member(c, "webhookUrl");
    ver = member(c, "apiVersion");
    if (url == NULL || !json_is_string(url) || !url_ok(json_string_value(url)))
        return fail(err, errlen,
                    "customAllocationDefinition.webhookUrl must be an http(s) URL");
    if (ver == NULL || !json_is_string(ver) || json_string_length(ver) == 0 ||
        json_string_length(ver) > 64)
        return fail(err, errlen, "customAllocationDefinition.apiVersion must be a string");
    o = json_pack("{s:s, s:s}", "webhookUrl", json_string_value(url), "apiVersion",
                  json_string_value(ver));
    if (o == NULL)
        return PROV_ENOMEM;
    if ((r = copy_other_members(o, c, fields, NELEM(fields))) != 0) {
        json_decref(o);
        return r;
    }
    return json_object_set_new(doc, "customAllocationDefinition", o) == 0 ? 0 : PROV_ENOMEM;
}

static int prepare_twin(const json_t *body, json_t *doc, char *err, size_t errlen)
{
    const json_t *t = member(body, "initialTwin");
    const json_t *tags, *props, *desired;

    if (t == NULL)
        return 0;
    if (!json_is_object(t))
        return fail(err, errlen, "initialTwin must be an object, not %s", type_name(t));
    tags = member(t, "tags");
    props = member(t, "properties");
    if (tags != NULL && !json_is_object(tags))
        return fail(err, errlen, "initialTwin.tags must be an object");
    if (props != NULL) {
        if (!json_is_object(props))
            return fail(err, errlen, "initialTwin.properties must be an object");
        desired = member(props, "desired");
        if (desired != NULL && !json_is_object(desired))
            return fail(err, errlen, "initialTwin.properties.desired must be an object");
    }
    return json_object_set_new(doc, "initialTwin", json_deep_copy(t)) == 0 ? 0 : PROV_ENOMEM;
}

int model_prepare(enum store_kind kind, const char *id, const json_t *body, const json_t *existing,
                  const struct cfg_hub *hubs, size_t nhubs, json_t **out,
                  const char **attestation, char *err, size_t errlen)
{
    static const char *const cap_fields[] = {"iotEdge"};
    static const bool cap_defaults[] = {false};
    static const char *const rp_fields[] = {"updateHubAssignment", "migrateDeviceData"};
    static const bool rp_defaults[] = {true, true};
    const char *idm = model_id_member(kind);
    const char *type = NULL, *policy = NULL, *single_hub = NULL;
    const json_t *v;
    const char *key;
    json_t *doc = NULL, *val;
    size_t nhub = 0;
    bool explicit_rp;
    int r = PROV_ENOMEM;

    *out = NULL;
    *attestation = NULL;
    if (!json_is_object(body))
        return fail(err, errlen, "the body must be a JSON object");
    if ((doc = json_object()) == NULL)
        return PROV_ENOMEM;

    v = member(body, idm);
    if (v != NULL && !json_is_string(v)) {
        r = fail(err, errlen, "%s must be a string", idm);
        goto out;
    }
    if (v != NULL && !str_ieq(json_string_value(v), id)) {
        r = fail(err, errlen, "%s in the body does not match the id in the path", idm);
        goto out;
    }
    if (json_object_set_new(doc, idm, json_string(v != NULL ? json_string_value(v) : id)) != 0)
        goto out;

    if (kind == STORE_ENROLLMENT && (v = member(body, "deviceId")) != NULL) {
        if (!json_is_string(v) || !device_id_ok(json_string_value(v))) {
            r = fail(err, errlen, "deviceId must be 1 to %d characters of letters, digits and "
                                  "-.+%%_#*?!(),:=@$'", MAX_DEVICE_ID);
            goto out;
        }
        if (json_object_set_new(doc, "deviceId", json_string(json_string_value(v))) != 0)
            goto out;
    }

    if ((r = prepare_attestation(kind, body, existing, doc, &type, err, errlen)) != 0)
        goto out;

    if ((r = set_bool_object(doc, member(body, "capabilities"), "capabilities", cap_fields,
                             cap_defaults, NELEM(cap_fields), err, errlen)) != 0)
        goto out;

    if ((r = prepare_hubs(body, doc, hubs, nhubs, &single_hub, &nhub, err, errlen)) != 0)
        goto out;

    if ((r = prepare_twin(body, doc, err, errlen)) != 0)
        goto out;

    v = member(body, "provisioningStatus");
    if (v != NULL && (!json_is_string(v) || model_provisioning_status(json_string_value(v)) ==
                                                NULL)) {
        r = fail(err, errlen, "provisioningStatus must be enabled or disabled");
        goto out;
    }
    if (json_object_set_new(doc, "provisioningStatus",
                            json_string(v != NULL ? model_provisioning_status(
                                                        json_string_value(v))
                                                  : "enabled")) != 0) {
        r = PROV_ENOMEM;
        goto out;
    }

    v = member(body, "reprovisionPolicy");
    explicit_rp = v != NULL;
    if ((r = set_bool_object(doc, v, "reprovisionPolicy", rp_fields, rp_defaults,
                             NELEM(rp_fields), err, errlen)) != 0)
        goto out;

    v = member(body, "allocationPolicy");
    if (v != NULL) {
        if (!json_is_string(v) ||
            (policy = model_allocation_policy(json_string_value(v))) == NULL) {
            r = fail(err, errlen, "allocationPolicy must be hashed, geoLatency, static or custom");
            goto out;
        }
        if (json_object_set_new(doc, "allocationPolicy", json_string(policy)) != 0) {
            r = PROV_ENOMEM;
            goto out;
        }
    }
    if (policy != NULL && strcmp(policy, "static") == 0 && nhub != 1) {
        r = fail(err, errlen,
                 "allocationPolicy static needs exactly one hub (iotHubs or iotHubHostName)");
        goto out;
    }
    if ((r = prepare_custom(body, doc, policy != NULL && strcmp(policy, "custom") == 0, err,
                            errlen)) != 0)
        goto out;

    if (kind == STORE_ENROLLMENT && (v = member(body, "optionalDeviceInformation")) != NULL) {
        if (!json_is_object(v)) {
            r = fail(err, errlen, "optionalDeviceInformation must be an object");
            goto out;
        }
        if (json_object_set_new(doc, "optionalDeviceInformation", json_deep_copy(v)) != 0) {
            r = PROV_ENOMEM;
            goto out;
        }
    }

    /* unknown members: kept and echoed as sent */
    r = PROV_ENOMEM;
    json_object_foreach((json_t *)body, key, val) {
        if (is_known_member(kind, key))
            continue;
        if (json_object_set_new(doc, key, json_deep_copy(val)) != 0)
            goto out;
    }
    if (json_object_set_new(doc, MODEL_PRIVATE,
                            json_pack("{s:b}", MODEL_REPROVISION_EXPLICIT, explicit_rp)) != 0)
        goto out;

    *attestation = type;
    *out = doc;
    doc = NULL;
    r = 0;
out:
    model_json_free(doc);
    return r;
}

static void drop_certificates(json_t *x509)
{
    static const char *const pairs[] = {"clientCertificates", "signingCertificates"};
    static const char *const slots[] = {"primary", "secondary"};

    for (size_t i = 0; i < NELEM(pairs); i++) {
        json_t *p = json_object_get(x509, pairs[i]);

        for (size_t k = 0; k < NELEM(slots); k++) {
            json_t *c = json_object_get(p, slots[k]);

            if (json_is_object(c))
                json_object_del(c, "certificate");
        }
    }
}

json_t *model_render(const json_t *stored, const char *etag, const char *created,
                     const char *updated, unsigned flags)
{
    json_t *o = json_deep_copy(stored);
    json_t *att;
    char quoted[128];

    if (o == NULL || !json_is_object(o)) {
        json_decref(o);
        return NULL;
    }
    json_object_del(o, MODEL_PRIVATE);
    att = json_object_get(o, "attestation");
    if (!(flags & MODEL_WITH_KEYS)) {
        json_t *sk = json_object_get(att, "symmetricKey");

        if (json_is_object(sk)) {
            /* o is a deep copy: the key strings are ours to wipe */
            wipe_string(json_object_get(sk, "primaryKey"));
            wipe_string(json_object_get(sk, "secondaryKey"));
            json_object_del(sk, "primaryKey");
            json_object_del(sk, "secondaryKey");
        }
    }
    if (!(flags & MODEL_WITH_CERTS))
        drop_certificates(json_object_get(att, "x509"));
    if (etag != NULL) {
        model_etag_quote(etag, quoted, sizeof(quoted));
        if (json_object_set_new(o, "etag", json_string(quoted)) != 0)
            goto oom;
    }
    if (created != NULL && json_object_set_new(o, "createdDateTimeUtc", json_string(created)) != 0)
        goto oom;
    if (updated != NULL &&
        json_object_set_new(o, "lastUpdatedDateTimeUtc", json_string(updated)) != 0)
        goto oom;
    return o;
oom:
    model_json_free(o);
    return NULL;
}

json_t *model_attestation(const json_t *stored)
{
    const json_t *a = json_object_get(stored, "attestation");
    json_t *o = json_is_object(a) ? json_deep_copy(a) : NULL;

    /* X.509: info only, as DPS (certificates are not secrets, but not echoed either) */
    if (o != NULL)
        drop_certificates(json_object_get(o, "x509"));
    return o;
}

bool model_reprovision_explicit(const json_t *stored)
{
    const json_t *p = json_object_get(stored, MODEL_PRIVATE);

    return json_is_true(json_object_get(p, MODEL_REPROVISION_EXPLICIT));
}

int model_etag_normalize(const char *if_match, char *out, size_t outlen)
{
    const char *s = if_match;
    size_t len;

    if (s == NULL)
        return PROV_EINVAL;
    while (*s == ' ' || *s == '\t')
        s++;
    len = strlen(s);
    while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t'))
        len--;
    if (len >= 2 && s[0] == 'W' && s[1] == '/') {
        s += 2;
        len -= 2;
    }
    if (len >= 2 && s[0] == '"' && s[len - 1] == '"') {
        s++;
        len -= 2;
    }
    if (len == 0 || len >= outlen)
        return PROV_EINVAL;
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)s[i] < 0x20 || s[i] == '"')
            return PROV_EINVAL;
    }
    memcpy(out, s, len);
    out[len] = '\0';
    return 0;
}

void model_etag_quote(const char *etag, char *out, size_t outlen)
{
    snprintf(out, outlen, "\"%s\"", etag);
}

void model_continuation_encode(const char *id, char *out, size_t outlen)
{
    size_t len = strlen(id);
    char *b = malloc(b64_encoded_len(len) + 1);
    size_t n;

    if (outlen == 0)
        return;
    out[0] = '\0';
    if (b == NULL)
        return;
    b64_encode((const uint8_t *)id, len, b);
    n = strlen(b);
    while (n > 0 && b[n - 1] == '=')
        n--;
    for (size_t i = 0; i < n; i++)
        b[i] = b[i] == '+' ? '-' : b[i] == '/' ? '_' : b[i];
    b[n] = '\0';
    if (n < outlen)
        memcpy(out, b, n + 1);
    free(b);
}

int model_continuation_decode(const char *token, char *out, size_t outlen)
{
    char b[4 * ((PROV_MAX_REG_ID + 2) / 3) + 1];
    uint8_t raw[sizeof(b)];
    size_t len = strlen(token);
    int n;

    if (len == 0 || len % 4 == 1 || len + 3 >= sizeof(b))
        return PROV_EINVAL;
    for (size_t i = 0; i < len; i++) {
        char c = token[i];

        if (c == '-')
            c = '+';
        else if (c == '_')
            c = '/';
        else if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')))
            return PROV_EINVAL;
        b[i] = c;
    }
    while (len % 4 != 0)
        b[len++] = '=';
    b[len] = '\0';
    n = b64_decode(b, len, raw);
    if (n <= 0 || (size_t)n >= outlen)
        return PROV_EINVAL;
    memcpy(out, raw, (size_t)n);
    out[n] = '\0';
    if (strlen(out) != (size_t)n || !id_is_valid(out))
        return PROV_EINVAL;
    for (int i = 0; i < n; i++) {
        if (out[i] >= 'A' && out[i] <= 'Z')
            return PROV_EINVAL; /* tokens carry the store's lower-case key */
    }
    return 0;
}

static void wipe_string(json_t *s)
{
    if (json_is_string(s) && s->refcount == 1)
        prov_cleanse((char *)json_string_value(s), json_string_length(s));
}

void model_json_free(json_t *doc)
{
    json_t *att, *sk;

    if (doc == NULL)
        return;
    if (doc->refcount == 1 && json_is_object(doc)) {
        /* a document, an attestation mechanism or a symmetricKey object */
        att = json_object_get(doc, "attestation");
        if (att == NULL || att->refcount != 1)
            att = doc;
        sk = json_object_get(att, "symmetricKey");
        if (sk == NULL || sk->refcount != 1)
            sk = att;
        wipe_string(json_object_get(sk, "primaryKey"));
        wipe_string(json_object_get(sk, "secondaryKey"));
    }
    json_decref(doc);
}

/* ---- X.509: shared certificates and CA references ---- */

/* The certificate entries (objects) of an X.509 entity's client or signing pairs. */
static size_t cert_entries(const json_t *doc, const json_t *out[4])
{
    static const char *const pairs[] = {"clientCertificates", "signingCertificates"};
    static const char *const slots[] = {"primary", "secondary"};
    const json_t *att = json_object_get(doc, "attestation");
    const json_t *x = json_object_get(att, "x509");
    const char *type = json_string_value(json_object_get(att, "type"));
    size_t n = 0;

    if (type == NULL || strcmp(type, "x509") != 0)
        return 0;
    for (size_t i = 0; i < NELEM(pairs); i++) {
        for (size_t k = 0; k < NELEM(slots); k++) {
            const json_t *e = json_object_get(json_object_get(x, pairs[i]), slots[k]);

            if (json_is_object(e))
                out[n++] = e;
        }
    }
    return n;
}

/* Same certificate: by SHA-256 when both entries know it, else by SHA-1. */
static const char *same_cert(const json_t *a, const json_t *b)
{
    const json_t *ia = json_object_get(a, "info");
    const json_t *ib = json_object_get(b, "info");
    static const char *const names[] = {"sha256Thumbprint", "sha1Thumbprint"};

    for (size_t i = 0; i < NELEM(names); i++) {
        const char *ta = json_string_value(json_object_get(ia, names[i]));
        const char *tb = json_string_value(json_object_get(ib, names[i]));

        if (ta != NULL && tb != NULL)
            return str_ieq(ta, tb) ? ta : NULL;
    }
    return NULL;
}

bool model_x509_shares_certificate(const json_t *a, const json_t *b, char *thumbprint,
                                   size_t tplen)
{
    const json_t *ea[4], *eb[4];
    size_t na = cert_entries(a, ea), nb = cert_entries(b, eb);

    for (size_t i = 0; i < na; i++) {
        for (size_t k = 0; k < nb; k++) {
            const char *tp = same_cert(ea[i], eb[k]);

            if (tp != NULL) {
                if (thumbprint != NULL && tplen > 0)
                    snprintf(thumbprint, tplen, "%s", tp);
                return true;
            }
        }
    }
    return false;
}

size_t model_x509_thumbprints(const json_t *doc, const char *out[8])
{
    static const char *const keys[] = {"sha256Thumbprint", "sha1Thumbprint"};
    const json_t *e[4];
    size_t ne = cert_entries(doc, e), n = 0;

    for (size_t i = 0; i < ne; i++) {
        const json_t *info = json_object_get(e[i], "info");

        for (size_t k = 0; k < NELEM(keys); k++) {
            const char *tp = json_string_value(json_object_get(info, keys[k]));

            if (tp != NULL)
                out[n++] = tp;
        }
    }
    return n;
}

size_t model_x509_ca_references(const json_t *doc, const char *names[2])
{
    const json_t *att = json_object_get(doc, "attestation");
    const json_t *refs = json_object_get(json_object_get(att, "x509"), "caReferences");
    const char *type = json_string_value(json_object_get(att, "type"));
    size_t n = 0;

    if (type == NULL || strcmp(type, "x509") != 0)
        return 0;
    if (json_string_value(json_object_get(refs, "primary")) != NULL)
        names[n++] = json_string_value(json_object_get(refs, "primary"));
    if (json_string_value(json_object_get(refs, "secondary")) != NULL)
        names[n++] = json_string_value(json_object_get(refs, "secondary"));
    return n;
}

bool model_references_ca(const json_t *doc, const char *name)
{
    const char *names[2];
    size_t n = model_x509_ca_references(doc, names);

    for (size_t i = 0; i < n; i++) {
        if (str_ieq(names[i], name))
            return true;
    }
    return false;
}

/* ---- CA certificates ---- */

bool model_ca_name_valid(const char *name)
{
    return ca_name_is_valid(name);
}

/* Days since 1970-01-01 of a proleptic Gregorian date (era arithmetic). */
static long days_from_civil(long y, long m, long d)
{
    long era, yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static bool digits(const char *s, size_t n, long *out)
{
    long v = 0;

    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

int model_rfc1123(const char *t, char *out, size_t outlen)
{
    static const char *const wdays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    long y, mo, d, h, mi, s, wd;
    const char *p;

    if (t == NULL || strlen(t) < 20 || t[4] != '-' || t[7] != '-' || t[10] != 'T' ||
        t[13] != ':' || t[16] != ':' || !digits(t, 4, &y) || !digits(t + 5, 2, &mo) ||
        !digits(t + 8, 2, &d) || !digits(t + 11, 2, &h) || !digits(t + 14, 2, &mi) ||
        !digits(t + 17, 2, &s))
        return PROV_EINVAL;
    p = t + 19;
    if (*p == '.') {
        for (p++; *p >= '0' && *p <= '9'; p++)
            ;
    }
    if (strcmp(p, "Z") != 0 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 ||
        s > 60)
        return PROV_EINVAL;
    wd = (days_from_civil(y, mo, d) % 7 + 11) % 7; /* 1970-01-01 was a Thursday */
    snprintf(out, outlen, "%s, %02ld %s %04ld %02ld:%02ld:%02ld GMT", wdays[wd],
             d, months[mo - 1], y, h, mi, s);
    return 0;
}

static X509 *ca_stored_cert(const json_t *stored)
{
    const char *pem = json_string_value(json_object_get(stored, MODEL_CA_PEM));
    const char *why;

    return pem != NULL ? x509_parse_one(pem, &why) : NULL;
}

const char *model_ca_code(const json_t *stored)
{
    return json_string_value(
        json_object_get(json_object_get(stored, MODEL_PRIVATE), MODEL_CA_CODE));
}

static int ca_set_code(json_t *doc, const char *code)
{
    json_t *priv = json_object_get(doc, MODEL_PRIVATE);

    if (code == NULL) {
        json_object_del(doc, MODEL_PRIVATE);
        return 0;
    }
    if (!json_is_object(priv)) {
        if (json_object_set_new(doc, MODEL_PRIVATE, json_object()) != 0)
            return PROV_ENOMEM;
        priv = json_object_get(doc, MODEL_PRIVATE);
    }
    return json_object_set_new(priv, MODEL_CA_CODE, json_string(code)) == 0 ? 0 : PROV_ENOMEM;
}

int model_ca_prepare(const char *name, const json_t *body, const json_t *existing, json_t **out,
                     char *err, size_t errlen)
{
    const json_t *cert = member(body, "certificate");
    const json_t *verified = member(body, "isVerified");
    X509 *x = NULL, *old = NULL;
    char *pem = NULL;
    json_t *doc = NULL;
    bool same, is_verified;
    int r = PROV_ENOMEM;
    const char *why = NULL;

    *out = NULL;
    if (!json_is_object(body))
        return fail(err, errlen, "the body must be a JSON object");
    if (cert == NULL)
        return fail(err, errlen, "certificate is required (PEM or base64 DER)");
    if (!json_is_string(cert) || json_string_length(cert) == 0)
        return fail(err, errlen, "certificate must be a string (PEM or base64 DER)");
    if (verified != NULL && !json_is_boolean(verified))
        return fail(err, errlen, "isVerified must be a boolean");
    if ((x = x509_parse_one(json_string_value(cert), &why)) == NULL)
        return fail(err, errlen, "certificate: %s", why != NULL ? why : "not a certificate");
    if (!x509_is_ca(x)) {
        r = fail(err, errlen, "the certificate is not a CA certificate (basic constraints "
                 "CA:TRUE is required)");
        goto out;
    }
    if ((pem = x509_to_pem(x)) == NULL)
        goto out;
    old = existing != NULL ? ca_stored_cert(existing) : NULL;
    same = old != NULL && X509_cmp(old, x) == 0;
    /* a new certificate starts unverified; the same one keeps its state unless told */
    if (verified != NULL)
        is_verified = json_is_true(verified);
    else
        is_verified = same && json_is_true(json_object_get(existing, "isVerified"));
    doc = json_pack("{s:s, s:s, s:b}", "name", name, MODEL_CA_PEM, pem, "isVerified",
                    is_verified);
    if (doc == NULL)
        goto out;
    if (same && !is_verified && model_ca_code(existing) != NULL &&
        (r = ca_set_code(doc, model_ca_code(existing))) != 0)
        goto out;
    *out = doc;
    doc = NULL;
    r = 0;
out:
    json_decref(doc);
    free(pem);
    X509_free(x);
    X509_free(old);
    return r;
}

int model_ca_new_code(json_t *stored, char code[MODEL_CA_CODE_LEN + 1])
{
    uint8_t raw[MODEL_CA_CODE_LEN / 2];
    int r;

    if ((r = random_bytes(raw, sizeof(raw))) != 0)
        return r;
    hex_encode(raw, sizeof(raw), code, true);
    return ca_set_code(stored, code);
}

int model_ca_verify(json_t *stored, const json_t *body, time_t now, char *err, size_t errlen)
{
    const json_t *cert = member(body, "certificate");
    const char *code = model_ca_code(stored);
    const char *why = NULL;
    X509 *ca = NULL, *proof = NULL;
    int r;

    if (!json_is_object(body))
        return fail(err, errlen, "the body must be a JSON object");
    if (cert == NULL || !json_is_string(cert) || json_string_length(cert) == 0)
        return fail(err, errlen, "certificate (the verification certificate, PEM or base64 "
                    "DER) is required");
    if (code == NULL) {
        fail(err, errlen, "no verification code is pending for this certificate; call "
             "generateVerificationCode first");
        return PROV_EAUTH;
    }
    if ((proof = x509_parse_one(json_string_value(cert), &why)) == NULL)
        return fail(err, errlen, "certificate: %s", why != NULL ? why : "not a certificate");
    if ((ca = ca_stored_cert(stored)) == NULL) {
        X509_free(proof);
        fail(err, errlen, "the stored CA certificate is unreadable");
        return PROV_EINTERNAL;
    }
    r = x509_verify_pop(ca, proof, code, now, &why);
    X509_free(ca);
    X509_free(proof);
    if (r != 0) {
        fail(err, errlen, "proof of possession failed: %s",
             why != NULL ? why : "the verification certificate was refused");
        return PROV_EAUTH;
    }
    if (json_object_set_new(stored, "isVerified", json_true()) != 0)
        return PROV_ENOMEM;
    return ca_set_code(stored, NULL);
}

json_t *model_ca_render(const json_t *stored, const char *etag, const char *created,
                        const char *updated, bool with_code)
{
    const char *name = json_string_value(json_object_get(stored, "name"));
    X509 *x = ca_stored_cert(stored);
    json_t *info = NULL, *props = NULL, *o = NULL;
    unsigned char *der = NULL;
    char *b64 = NULL, *id = NULL;
    char sha1[41], expiry[64], c1123[64], u1123[64];
    int derlen;
    size_t idlen;

    if (x == NULL || name == NULL || (info = x509_info(x)) == NULL)
        goto out;
    if ((derlen = i2d_X509(x, &der)) <= 0 ||
        (b64 = b64_encode_alloc(der, (size_t)derlen)) == NULL)
        goto out;
    x509_sha1_thumbprint(x, sha1);
    if (model_rfc1123(json_string_value(json_object_get(info, "notAfterUtc")), expiry,
                      sizeof(expiry)) != 0)
        snprintf(expiry, sizeof(expiry), "%s", "");
    if (created == NULL || model_rfc1123(created, c1123, sizeof(c1123)) != 0)
        c1123[0] = '\0';
    if (updated == NULL || model_rfc1123(updated, u1123, sizeof(u1123)) != 0)
        u1123[0] = '\0';
    props = json_pack("{s:s*, s:s, s:s, s:b, s:s, s:s, s:s}", "subject",
                      json_string_value(json_object_get(info, "subjectName")), "expiry", expiry,
                      "thumbprint", sha1, "isVerified",
                      json_is_true(json_object_get(stored, "isVerified")), "certificate", b64,
                      "created", c1123, "updated", u1123);
    if (props == NULL)
        goto out;
    if (with_code && model_ca_code(stored) != NULL &&
        json_object_set_new(props, "verificationCode", json_string(model_ca_code(stored))) != 0)
        goto out;
    idlen = strlen("/certificates/") + strlen(name) + 1;
    if ((id = malloc(idlen)) == NULL)
        goto out;
    snprintf(id, idlen, "/certificates/%s", name);
    o = json_pack("{s:s, s:s, s:s, s:s*, s:O}", "id", id, "name", name, "type", MODEL_CA_TYPE,
                  "etag", etag, "properties", props);
out:
    free(id);
    free(b64);
    OPENSSL_free(der);
    json_decref(props);
    json_decref(info);
    X509_free(x);
    return o;
}
