/*
 * Unit tests for the service-API model (src/server/model.c): validation,
 * normalisation, key handling and output shaping of enrollments and groups,
 * X.509 attestation (certificates, thumbprint pins, keep-on-update, shared
 * certificates); and for service SAS verification (src/server/service_auth.c).
 */
#include <ctype.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "src/common/errors.h"
#include "src/common/limits.h"
#include "src/common/sas.h"
#include "src/common/util.h"
#include "src/server/config.h"
#include "src/server/model.h"
#include "src/server/service_auth.h"
#include "src/server/x509.h"
#include "testpki.h"

static struct cfg_hub hubs[2] = {
    {.hostname = "hub1.example.net", .weight = 1, .apply_allocation_policy = true},
    {.hostname = "Hub2.Example.NET", .weight = 1, .apply_allocation_policy = true},
};
#define NHUBS 2

static json_t *parse(const char *text)
{
    json_error_t e;
    json_t *j = json_loads(text, 0, &e);

    if (j == NULL)
        fail_msg("test JSON does not parse: %s: %s", e.text, text);
    return j;
}

/* Runs model_prepare on text; returns r, the document in *out (may be NULL). */
static int prepare(enum store_kind kind, const char *id, const char *text, const json_t *existing,
                   json_t **out, const char **att, char *err, size_t errlen)
{
    json_t *body = parse(text);
    const char *dummy;
    int r;

    err[0] = '\0';
    r = model_prepare(kind, id, body, existing, hubs, NHUBS, out, att ? att : &dummy, err,
                      errlen);
    json_decref(body);
    return r;
}

static json_t *prepare_ok(enum store_kind kind, const char *id, const char *text,
                          const json_t *existing)
{
    char err[384];
    json_t *doc = NULL;
    int r = prepare(kind, id, text, existing, &doc, NULL, err, sizeof(err));

    if (r != 0)
        fail_msg("prepare failed (%d): %s for %s", r, err, text);
    assert_non_null(doc);
    return doc;
}

static const char *str_at(const json_t *j, const char *path)
{
    char buf[256];
    char *save = NULL, *p;
    const json_t *cur = j;

    snprintf(buf, sizeof(buf), "%s", path);
    for (p = strtok_r(buf, ".", &save); p != NULL; p = strtok_r(NULL, ".", &save))
        cur = json_object_get(cur, p);
    return json_string_value(cur);
}

static const json_t *at(const json_t *j, const char *path)
{
    char buf[256];
    char *save = NULL, *p;
    const json_t *cur = j;

    snprintf(buf, sizeof(buf), "%s", path);
    for (p = strtok_r(buf, ".", &save); p != NULL; p = strtok_r(NULL, ".", &save))
        cur = json_object_get(cur, p);
    return cur;
}

static size_t b64_len(const char *s)
{
    uint8_t buf[256];
    int n;

    assert_non_null(s);
    assert_true(b64_decoded_max(strlen(s)) <= sizeof(buf));
    n = b64_decode(s, strlen(s), buf);
    assert_true(n > 0);
    return (size_t)n;
}

/* 16 bytes and 64 bytes of base64, and one of each bad length. */
#define KEY16 "AAECAwQFBgcICQoLDA0ODw=="
#define KEY32 "cHJpbWFyeWtleXByaW1hcnlrZXlwcmltYXJ5a2V5MDA="
#define KEY32B "c2Vjb25kYXJ5a2V5c2Vjb25kYXJ5a2V5c2Vjb25kYXI="
#define KEY15 "AAECAwQFBgcICQoLDA0O"
/* the EK and SRK of a TPM (TPM2B_PUBLIC), as the device sends them */
#define TPM_EK "AToAAQALAAMAsgAgg3GXZ0SEs/gakMyNRqXXJP1S124GUgtk8qHaGzMUaaoABgCAAEMAEAgAAAAAAAEAoR4OQ3+YBOMZlGi3zSV6hpXsY+GGlLflkfMYK1whbbYJInE5gW4+2LaqSCwnq5cEF0Auk1OKdZPHHf+UCUmYBWh3+ZLb2hIxYH4RtUOrHDN8KVD+l+/DzbNSLihUcZ10hGWXuwZX98TSD69aui5YyYZowKzgoW9UV0wCl0MoacnkY4HKkq6Ij4I17nHo5gN3p14lQRf+j5+j4pw8Umtm6ePg6tuGRyQE8ZrJ0VuZmVYICA2Kequiy1XC/6ojW0iv/En/PN2WhP1Wvn2hcy8101pKSD97iBKVdR3C/LShLovOomykU1zQKWykanJLDGjbLKlgOhuFGT4GdGRwbC3eww=="
#define TPM_SRK "ARoAAQALAAMEcgAAAAYAgABDABAIAAAAAAABAIVAPQp9ldpqUtqev5s6Z/Q5Bxll3D6aBj4Gnv1ZFbmgrZzqNE/RrrgZ43rmoFqsOHHIDHBUMFOj+2rtp8lTV9ce6sPD0jgjPjU7/3+7sG1dJs1Fmt0intBusia/yieQqs+pMnJYlgccZH9QbUVgoHABOZDi2wXGb3crA/XqaTf8Hvi3F4dxxmNX5+8shXsIWX5BPAEWlL1jw5eFIZM+fAk0KqznFD1Q8oBJmIQp/PchrPoVZSopwss4eZg3awvZCvzxNVpUUN7koz3+QC/AwX/dkPJU13J58CNfhEKELew8DAnAbUEdVIgb0u65G/yY0ADAvKjoTJpjyVlkIPn1EP0="
#define KEY65                                                                                    \
    "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+P0A="

/* ---- test certificates: tests/unit/testpki.c ---- */

/* ---- parsing ---- */

static void test_parse_object(void **state)
{
    char err[384];
    json_t *j = NULL;

    (void)state;
    assert_int_equal(model_parse_object("{\"a\":1}", 7, false, &j, err, sizeof(err)), 0);
    assert_non_null(j);
    json_decref(j);

    assert_int_equal(model_parse_object("{\"a\":", 5, false, &j, err, sizeof(err)),
                     PROV_EPROTO);
    assert_null(j);
    assert_non_null(strstr(err, "malformed JSON"));
    assert_non_null(strstr(err, "line 1"));

    assert_int_equal(model_parse_object("[1,2]", 5, false, &j, err, sizeof(err)), PROV_EPROTO);
    assert_non_null(strstr(err, "not an array"));

    assert_int_equal(model_parse_object("\"x\"", 3, false, &j, err, sizeof(err)), PROV_EPROTO);
    assert_non_null(strstr(err, "JSON"));

    assert_int_equal(model_parse_object(" \r\n", 3, false, &j, err, sizeof(err)), PROV_EPROTO);
    assert_non_null(strstr(err, "empty"));

    assert_int_equal(model_parse_object("", 0, true, &j, err, sizeof(err)), 0);
    assert_null(j);

    assert_int_equal(model_parse_object("{\"a\":1,\"a\":2}", 13, false, &j, err, sizeof(err)),
                     PROV_EPROTO);
}

/* ---- keys ---- */

static void test_keys_generated_on_create(void **state)
{
    json_t *doc;
    const char *att = NULL;
    char err[384];
    const char *p, *s;

    (void)state;
    assert_int_equal(prepare(STORE_ENROLLMENT, "dev-1",
                             "{\"attestation\":{\"type\":\"symmetricKey\"}}", NULL, &doc, &att,
                             err, sizeof(err)),
                     0);
    assert_string_equal(att, "symmetricKey");
    p = str_at(doc, "attestation.symmetricKey.primaryKey");
    s = str_at(doc, "attestation.symmetricKey.secondaryKey");
    assert_int_equal(b64_len(p), 64);
    assert_int_equal(b64_len(s), 64);
    assert_string_not_equal(p, s);
    model_json_free(doc);

    /* empty sub-object and empty strings mean "none given" too */
    doc = prepare_ok(STORE_GROUP, "g1",
                     "{\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":"
                     "{\"primaryKey\":\"\",\"secondaryKey\":null}}}",
                     NULL);
    assert_int_equal(b64_len(str_at(doc, "attestation.symmetricKey.primaryKey")), 64);
    assert_int_equal(b64_len(str_at(doc, "attestation.symmetricKey.secondaryKey")), 64);
    model_json_free(doc);
}

static void test_keys_partial_on_create(void **state)
{
    json_t *doc;

    (void)state;
    doc = prepare_ok(STORE_ENROLLMENT, "dev-1",
                     "{\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":"
                     "{\"primaryKey\":\"" KEY32 "\"}}}",
                     NULL);
    assert_string_equal(str_at(doc, "attestation.symmetricKey.primaryKey"), KEY32);
    assert_int_equal(b64_len(str_at(doc, "attestation.symmetricKey.secondaryKey")), 64);
    model_json_free(doc);
}

static void test_keys_kept_on_update(void **state)
{
    json_t *old, *doc;

    (void)state;
    old = prepare_ok(STORE_ENROLLMENT, "dev-1",
                     "{\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":"
                     "{\"primaryKey\":\"" KEY32 "\",\"secondaryKey\":\"" KEY32B "\"}}}",
                     NULL);
    /* no keys: both kept */
    doc = prepare_ok(STORE_ENROLLMENT, "dev-1",
                     "{\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":{}},"
                     "\"provisioningStatus\":\"disabled\"}",
                     old);
    assert_string_equal(str_at(doc, "attestation.symmetricKey.primaryKey"), KEY32);
    assert_string_equal(str_at(doc, "attestation.symmetricKey.secondaryKey"), KEY32B);
    assert_string_equal(str_at(doc, "provisioningStatus"), "disabled");
    model_json_free(doc);

    /* only the primary: the new primary, the stored secondary */
    doc = prepare_ok(STORE_ENROLLMENT, "dev-1",
                     "{\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":"
                     "{\"primaryKey\":\"" KEY16 "\"}}}",
                     old);
    assert_string_equal(str_at(doc, "attestation.symmetricKey.primaryKey"), KEY16);
    assert_string_equal(str_at(doc, "attestation.symmetricKey.secondaryKey"), KEY32B);
    model_json_free(doc);
    model_json_free(old);

    /* the stored entity used another attestation: fresh keys */
    old = prepare_ok(STORE_ENROLLMENT, "dev-1", "{\"attestation\":{\"type\":\"none\"}}", NULL);
    doc = prepare_ok(STORE_ENROLLMENT, "dev-1", "{\"attestation\":{\"type\":\"symmetricKey\"}}",
                     old);
    assert_int_equal(b64_len(str_at(doc, "attestation.symmetricKey.primaryKey")), 64);
    model_json_free(doc);
    model_json_free(old);
}

/* ---- defaults, canonical forms, opaque members ---- */

static void test_defaults(void **state)
{
    json_t *doc;
    const char *att = NULL;
    char err[384];

    (void)state;
    assert_int_equal(prepare(STORE_ENROLLMENT, "dev-1", "{\"attestation\":{\"type\":\"none\"}}",
                             NULL, &doc, &att, err, sizeof(err)),
                     0);
    assert_string_equal(att, "none");
    assert_string_equal(str_at(doc, "registrationId"), "dev-1");
    assert_string_equal(str_at(doc, "provisioningStatus"), "enabled");
    assert_true(json_is_false(at(doc, "capabilities.iotEdge")));
    assert_true(json_is_true(at(doc, "reprovisionPolicy.updateHubAssignment")));
    assert_true(json_is_true(at(doc, "reprovisionPolicy.migrateDeviceData")));
    assert_false(model_reprovision_explicit(doc));
    assert_null(json_object_get(doc, "allocationPolicy"));
    assert_null(json_object_get(doc, "deviceId"));
    model_json_free(doc);

    doc = prepare_ok(STORE_GROUP, "g1",
                     "{\"enrollmentGroupId\":\"g1\",\"attestation\":{\"type\":\"none\"},"
                     "\"reprovisionPolicy\":{\"updateHubAssignment\":false,"
                     "\"migrateDeviceData\":false},\"capabilities\":{\"iotEdge\":true}}",
                     NULL);
    assert_true(model_reprovision_explicit(doc));
    assert_true(json_is_false(at(doc, "reprovisionPolicy.updateHubAssignment")));
    assert_true(json_is_false(at(doc, "reprovisionPolicy.migrateDeviceData")));
    assert_true(json_is_true(at(doc, "capabilities.iotEdge")));
    model_json_free(doc);
}

static void test_canonical_enums(void **state)
{
    json_t *doc;
    const char *att = NULL;
    char err[384];
    enum model_bulk_mode m;

    (void)state;
    assert_int_equal(prepare(STORE_ENROLLMENT, "dev-1",
                             "{\"attestation\":{\"type\":\"SYMMETRICKEY\"},"
                             "\"allocationPolicy\":\"geolatency\","
                             "\"provisioningStatus\":\"Disabled\"}",
                             NULL, &doc, &att, err, sizeof(err)),
                     0);
    assert_string_equal(att, "symmetricKey");
    assert_string_equal(str_at(doc, "attestation.type"), "symmetricKey");
    assert_string_equal(str_at(doc, "allocationPolicy"), "geoLatency");
    assert_string_equal(str_at(doc, "provisioningStatus"), "disabled");
    model_json_free(doc);

    assert_string_equal(model_attestation_type("X509"), "x509");
    assert_string_equal(model_attestation_type("TPM"), "tpm");
    assert_null(model_attestation_type("sas"));
    assert_string_equal(model_allocation_policy("HASHED"), "hashed");
    assert_string_equal(model_allocation_policy("Static"), "static");
    assert_string_equal(model_allocation_policy("custom"), "custom");
    assert_null(model_allocation_policy("random"));
    assert_string_equal(model_provisioning_status("ENABLED"), "enabled");
    assert_null(model_provisioning_status("on"));

    assert_int_equal(model_bulk_mode("Create", &m), 0);
    assert_int_equal(m, BULK_CREATE);
    assert_int_equal(model_bulk_mode("update", &m), 0);
    assert_int_equal(m, BULK_UPDATE);
    assert_int_equal(model_bulk_mode("updateIfMatchETag", &m), 0);
    assert_int_equal(m, BULK_UPDATE_IF_MATCH);
    assert_int_equal(model_bulk_mode("updateIfMatchEtag", &m), 0);
    assert_int_equal(m, BULK_UPDATE_IF_MATCH);
    assert_int_equal(model_bulk_mode("DELETE", &m), 0);
    assert_int_equal(m, BULK_DELETE);
    assert_int_equal(model_bulk_mode("upsert", &m), PROV_EINVAL);
}

static void test_members_kept_and_ignored(void **state)
{
    json_t *doc, *out;

    (void)state;
    doc = prepare_ok(STORE_ENROLLMENT, "dev-1",
                     "{\"registrationId\":\"DEV-1\",\"attestation\":{\"type\":\"none\","
                     "\"futureField\":7},\"etag\":\"\\\"old\\\"\",\"createdDateTimeUtc\":\"x\","
                     "\"lastUpdatedDateTimeUtc\":\"y\",\"registrationState\":{\"status\":"
                     "\"assigned\"},\"_provd\":{\"reprovisionPolicyExplicit\":true},"
                     "\"credentialPolicyName\":\"cp1\",\"iotHubHostName\":null,"
                     "\"initialTwin\":{\"tags\":{\"a\":1},\"properties\":{\"desired\":"
                     "{\"b\":2}}},\"deviceId\":\"dev-1-device\","
                     "\"optionalDeviceInformation\":{\"k\":\"v\"}}",
                     NULL);
    /* the body's spelling of a case-insensitively equal id is kept */
    assert_string_equal(str_at(doc, "registrationId"), "DEV-1");
    assert_null(json_object_get(doc, "etag"));
    assert_null(json_object_get(doc, "createdDateTimeUtc"));
    assert_null(json_object_get(doc, "lastUpdatedDateTimeUtc"));
    assert_null(json_object_get(doc, "registrationState"));
    assert_null(json_object_get(doc, "iotHubHostName"));
    /* a client cannot set the private marker */
    assert_false(model_reprovision_explicit(doc));
    assert_string_equal(str_at(doc, "credentialPolicyName"), "cp1");
    assert_int_equal(json_integer_value(at(doc, "attestation.futureField")), 7);
    assert_int_equal(json_integer_value(at(doc, "initialTwin.properties.desired.b")), 2);
    assert_string_equal(str_at(doc, "deviceId"), "dev-1-device");
    assert_string_equal(str_at(doc, "optionalDeviceInformation.k"), "v");

    out = model_render(doc, "abc-123", "2026-01-01T00:00:00.000Z", "2026-01-02T00:00:00.000Z", 0);
    assert_non_null(out);
    assert_null(json_object_get(out, "_provd"));
    assert_string_equal(str_at(out, "etag"), "\"abc-123\"");
    assert_string_equal(str_at(out, "createdDateTimeUtc"), "2026-01-01T00:00:00.000Z");
    assert_string_equal(str_at(out, "lastUpdatedDateTimeUtc"), "2026-01-02T00:00:00.000Z");
    assert_string_equal(str_at(out, "credentialPolicyName"), "cp1");
    model_json_free(out);
    /* render copies: the stored document keeps its marker */
    assert_non_null(json_object_get(doc, "_provd"));
    model_json_free(doc);
}

static void test_hubs(void **state)
{
    json_t *doc;

    (void)state;
    doc = prepare_ok(STORE_ENROLLMENT, "dev-1",
                     "{\"attestation\":{\"type\":\"none\"},\"iotHubs\":[\"HUB1.example.net\","
                     "\"hub2.example.net\",\"hub1.EXAMPLE.net\"]}",
                     NULL);
    /* configured spellings, duplicates dropped */
    assert_int_equal(json_array_size(at(doc, "iotHubs")), 2);
    assert_string_equal(json_string_value(json_array_get(at(doc, "iotHubs"), 0)),
                        "hub1.example.net");
    assert_string_equal(json_string_value(json_array_get(at(doc, "iotHubs"), 1)),
                        "Hub2.Example.NET");
    model_json_free(doc);

    /* static with one hub, by either member */
    doc = prepare_ok(STORE_ENROLLMENT, "dev-1",
                     "{\"attestation\":{\"type\":\"none\"},\"allocationPolicy\":\"static\","
                     "\"iotHubs\":[\"hub2.example.net\"]}",
                     NULL);
    model_json_free(doc);
    doc = prepare_ok(STORE_GROUP, "g1",
                     "{\"attestation\":{\"type\":\"none\"},\"allocationPolicy\":\"STATIC\","
                     "\"iotHubHostName\":\"HUB1.example.net\"}",
                     NULL);
    assert_string_equal(str_at(doc, "iotHubHostName"), "hub1.example.net");
    model_json_free(doc);
    doc = prepare_ok(STORE_GROUP, "g1",
                     "{\"attestation\":{\"type\":\"none\"},\"allocationPolicy\":\"static\","
                     "\"iotHubHostName\":\"hub1.example.net\",\"iotHubs\":[\"hub1.example.net\"]}",
                     NULL);
    model_json_free(doc);
    doc = prepare_ok(STORE_GROUP, "g1",
                     "{\"attestation\":{\"type\":\"none\"},\"allocationPolicy\":\"custom\","
                     "\"customAllocationDefinition\":{\"webhookUrl\":\"https://x.example/f?code=1\""
                     ",\"apiVersion\":\"2021-10-01\"}}",
                     NULL);
    assert_string_equal(str_at(doc, "customAllocationDefinition.apiVersion"), "2021-10-01");
    model_json_free(doc);
}

static void test_other_attestations(void **state)
{
    json_t *doc, *out, *att;
    const char *type = NULL;
    char err[384];

    (void)state;
    assert_int_equal(prepare(STORE_ENROLLMENT, "dev-1",
                             "{\"attestation\":{\"type\":\"tpm\",\"tpm\":{\"endorsementKey\":"
                             "\"" TPM_EK "\",\"storageRootKey\":\"" TPM_SRK "\"}}}",
                             NULL, &doc, &type, err, sizeof(err)),
                     0);
    assert_string_equal(type, "tpm");
    assert_string_equal(str_at(doc, "attestation.tpm.endorsementKey"), TPM_EK);
    model_json_free(doc);
    /* base64 that is not a TPM public area fails, as endorsementKey and as storageRootKey */
    assert_int_equal(prepare(STORE_ENROLLMENT, "dev-1",
                             "{\"attestation\":{\"type\":\"tpm\",\"tpm\":{\"endorsementKey\":"
                             "\"" KEY32 "\"}}}",
                             NULL, &doc, &type, err, sizeof(err)),
                     PROV_EINVAL);
    assert_non_null(strstr(err, "endorsementKey is not an RSA-2048 TPM2B_PUBLIC"));
    assert_int_equal(prepare(STORE_ENROLLMENT, "dev-1",
                             "{\"attestation\":{\"type\":\"tpm\",\"tpm\":{\"endorsementKey\":"
                             "\"" TPM_EK "\",\"storageRootKey\":\"" KEY16 "\"}}}",
                             NULL, &doc, &type, err, sizeof(err)),
                     PROV_EINVAL);
    assert_non_null(strstr(err, "storageRootKey"));

    {
        EVP_PKEY *k = new_key();
        X509 *leaf = make_cert("dev-1", k, NULL, NULL, false, -1, 30);
        char *pem = pem_of(leaf);
        json_t *body = json_pack("{s:{s:s, s:{s:{s:{s:s}}}}}", "attestation", "type", "x509",
                                 "x509", "clientCertificates", "primary", "certificate", pem);

        assert_int_equal(model_prepare(STORE_ENROLLMENT, "dev-1", body, NULL, hubs, NHUBS, &doc,
                                       &type, err, sizeof(err)),
                         0);
        assert_string_equal(type, "x509");
        json_decref(body);
        free(pem);
        X509_free(leaf);
        EVP_PKEY_free(k);
    }
    /* GET shape: info only */
    out = model_render(doc, "e", NULL, NULL, 0);
    assert_null(at(out, "attestation.x509.clientCertificates.primary.certificate"));
    assert_string_equal(str_at(out, "attestation.x509.clientCertificates.primary.info.subjectName"),
                        "CN=dev-1");
    model_json_free(out);
    out = model_render(doc, "e", NULL, NULL, MODEL_WITH_CERTS);
    assert_non_null(at(out, "attestation.x509.clientCertificates.primary.certificate"));
    model_json_free(out);
    /* attestationmechanism: the type and info, no certificate body (DPS) */
    att = model_attestation(doc);
    assert_string_equal(str_at(att, "type"), "x509");
    assert_null(at(att, "x509.clientCertificates.primary.certificate"));
    assert_non_null(at(att, "x509.clientCertificates.primary.info"));
    model_json_free(att);
    model_json_free(doc);

    doc = prepare_ok(STORE_GROUP, "g1",
                     "{\"attestation\":{\"type\":\"x509\",\"x509\":{\"caReferences\":"
                     "{\"primary\":\"myca\"}}}}",
                     NULL);
    model_json_free(doc);
}

/* ---- X.509 attestation ---- */

static int prepare_j(enum store_kind kind, const char *id, json_t *body, const json_t *existing,
                     json_t **out, char *err, size_t errlen)
{
    const char *att = NULL;
    int r;

    err[0] = '\0';
    *out = NULL;
    r = model_prepare(kind, id, body, existing, hubs, NHUBS, out, &att, err, errlen);
    if (r == 0)
        assert_string_equal(att, "x509");
    json_decref(body);
    return r;
}

static json_t *prepare_j_ok(enum store_kind kind, const char *id, json_t *body,
                            const json_t *existing)
{
    char err[384];
    json_t *doc = NULL;
    int r = prepare_j(kind, id, body, existing, &doc, err, sizeof(err));

    if (r != 0)
        fail_msg("prepare failed (%d): %s", r, err);
    return doc;
}

/* {"attestation":{"type":"x509","x509":{<pair>:{"primary":p[,"secondary":s]}}}} (steals p, s) */
static json_t *x509_body(const char *pair, json_t *p, json_t *s)
{
    json_t *slots = json_pack("{s:o}", "primary", p);

    assert_non_null(slots);
    if (s != NULL)
        assert_int_equal(json_object_set_new(slots, "secondary", s), 0);
    return json_pack("{s:{s:s, s:{s:o}}}", "attestation", "type", "x509", "x509", pair, slots);
}

static json_t *cert_entry(const char *text)
{
    return json_pack("{s:s}", "certificate", text);
}

static void expect_x509_fail(enum store_kind kind, json_t *body, const json_t *existing,
                             const char *msg)
{
    char err[384];
    json_t *doc = (json_t *)1;
    int r = prepare_j(kind, kind == STORE_GROUP ? "g" : "dev-1", body, existing, &doc, err,
                      sizeof(err));

    if (r != PROV_EINVAL || strstr(err, msg) == NULL)
        fail_msg("r=%d err='%s', expected '%s'", r, err, msg);
    assert_null(doc);
}

static void test_x509_client_certificate(void **state)
{
    EVP_PKEY *k = new_key();
    X509 *leaf = make_cert("dev-1", k, NULL, NULL, false, -1, 30);
    char *pem = pem_of(leaf), *der = der_b64_of(leaf);
    char sha256[65], sha1[41];
    json_t *doc, *doc2, *out, *att, *e;

    (void)state;
    x509_sha256_thumbprint(leaf, sha256);
    x509_sha1_thumbprint(leaf, sha1);
    /* PEM; the client's own info is replaced by the server's */
    e = json_pack("{s:s, s:{s:s}}", "certificate", pem, "info", "subjectName", "CN=evil");
    doc = prepare_j_ok(STORE_ENROLLMENT, "dev-1", x509_body("clientCertificates", e, NULL), NULL);
    assert_non_null(strstr(str_at(doc, "attestation.x509.clientCertificates.primary.certificate"),
                           "-----BEGIN CERTIFICATE-----"));
    assert_string_equal(str_at(doc, "attestation.x509.clientCertificates.primary.info.subjectName"),
                        "CN=dev-1");
    assert_string_equal(
        str_at(doc, "attestation.x509.clientCertificates.primary.info.sha256Thumbprint"), sha256);
    assert_string_equal(
        str_at(doc, "attestation.x509.clientCertificates.primary.info.sha1Thumbprint"), sha1);
    /* bare base64 DER gives the same stored entry */
    doc2 = prepare_j_ok(STORE_ENROLLMENT, "dev-1",
                        x509_body("clientCertificates", cert_entry(der), NULL), NULL);
    assert_true(json_equal(at(doc, "attestation.x509"), at(doc2, "attestation.x509")));
    model_json_free(doc2);
    /* GET/query and the PUT answer: info only */
    out = model_render(doc, "e", NULL, NULL, MODEL_WITH_KEYS);
    assert_null(at(out, "attestation.x509.clientCertificates.primary.certificate"));
    assert_string_equal(str_at(out, "attestation.x509.clientCertificates.primary.info.subjectName"),
                        "CN=dev-1");
    model_json_free(out);
    /* attestationmechanism: info only too */
    att = model_attestation(doc);
    assert_string_equal(str_at(att, "type"), "x509");
    assert_null(at(att, "x509.clientCertificates.primary.certificate"));
    assert_string_equal(str_at(att, "x509.clientCertificates.primary.info.sha256Thumbprint"),
                        sha256);
    model_json_free(att);
    model_json_free(doc);
    free(pem);
    free(der);
    X509_free(leaf);
    EVP_PKEY_free(k);
}

static void test_x509_thumbprint_pins(void **state)
{
    EVP_PKEY *k = new_key();
    X509 *leaf = make_cert("dev-1", k, NULL, NULL, false, -1, 30);
    char sha256[65], sha1[41], colons[3 * 32], lower[65];
    json_t *doc, *existing;

    (void)state;
    x509_sha256_thumbprint(leaf, sha256);
    x509_sha1_thumbprint(leaf, sha1);
    /* "aa:bb:..." lower case with separators is normalised */
    for (size_t i = 0; i < 32; i++)
        snprintf(colons + 3 * i, sizeof(colons) - 3 * i, "%c%c%s", tolower(sha256[2 * i]),
                 tolower(sha256[2 * i + 1]), i < 31 ? ":" : "");
    doc = prepare_j_ok(STORE_ENROLLMENT, "dev-1",
                       x509_body("clientCertificates",
                                 json_pack("{s:{s:s}}", "info", "sha256Thumbprint", colons),
                                 json_pack("{s:{s:s}}", "info", "sha1Thumbprint", sha1)),
                       NULL);
    assert_string_equal(
        str_at(doc, "attestation.x509.clientCertificates.primary.info.sha256Thumbprint"), sha256);
    assert_null(at(doc, "attestation.x509.clientCertificates.primary.certificate"));
    assert_null(at(doc, "attestation.x509.clientCertificates.primary.info.subjectName"));
    assert_string_equal(
        str_at(doc, "attestation.x509.clientCertificates.secondary.info.sha1Thumbprint"), sha1);
    /* an info-only round trip without thumbprints keeps a stored pin */
    existing = doc;
    doc = prepare_j_ok(STORE_ENROLLMENT, "dev-1",
                       x509_body("clientCertificates", json_pack("{s:{}}", "info"), NULL),
                       existing);
    assert_string_equal(
        str_at(doc, "attestation.x509.clientCertificates.primary.info.sha256Thumbprint"), sha256);
    model_json_free(doc);
    model_json_free(existing);

    snprintf(lower, sizeof(lower), "%s", sha256);
    lower[10] = 'g';
    expect_x509_fail(STORE_ENROLLMENT,
                     x509_body("clientCertificates",
                               json_pack("{s:{s:s}}", "info", "sha256Thumbprint", lower), NULL),
                     NULL, "info.sha256Thumbprint must be 64 hex digits");
    expect_x509_fail(STORE_ENROLLMENT,
                     x509_body("clientCertificates",
                               json_pack("{s:{s:s}}", "info", "sha256Thumbprint", sha1), NULL),
                     NULL, "info.sha256Thumbprint must be 64 hex digits");
    expect_x509_fail(STORE_ENROLLMENT,
                     x509_body("clientCertificates",
                               json_pack("{s:{s:s}}", "info", "sha1Thumbprint", sha256), NULL),
                     NULL, "info.sha1Thumbprint must be 40 hex digits");
    expect_x509_fail(STORE_ENROLLMENT,
                     x509_body("clientCertificates",
                               json_pack("{s:{s:i}}", "info", "sha1Thumbprint", 5), NULL),
                     NULL, "info.sha1Thumbprint must be 40 hex digits");
    expect_x509_fail(STORE_ENROLLMENT,
                     x509_body("clientCertificates",
                               json_pack("{s:{s:s}}", "info", "subjectName", "CN=dev-1"), NULL),
                     NULL, "clientCertificates.primary needs a certificate");
    expect_x509_fail(STORE_ENROLLMENT,
                     x509_body("clientCertificates", json_pack("{s:s}", "info", "x"), NULL),
                     NULL, "clientCertificates.primary.info must be an object");
    X509_free(leaf);
    EVP_PKEY_free(k);
}

static void test_x509_keep_on_update(void **state)
{
    EVP_PKEY *k = new_key(), *k2 = new_key();
    X509 *leaf = make_cert("dev-1", k, NULL, NULL, false, -1, 30);
    X509 *other = make_cert("dev-1", k2, NULL, NULL, false, -1, 30);
    char *pem = pem_of(leaf), *pem2 = pem_of(other);
    char sha256_other[65];
    json_t *stored, *doc, *body, *entry;

    (void)state;
    x509_sha256_thumbprint(other, sha256_other);
    stored = prepare_j_ok(STORE_ENROLLMENT, "dev-1",
                          x509_body("clientCertificates", cert_entry(pem), NULL), NULL);
    /* the GET answer sent back as is (info only): the stored certificate is kept */
    body = model_render(stored, "e1", "c", "u", 0);
    doc = prepare_j_ok(STORE_ENROLLMENT, "dev-1", body, stored);
    assert_true(json_equal(at(doc, "attestation.x509.clientCertificates.primary"),
                           at(stored, "attestation.x509.clientCertificates.primary")));
    assert_non_null(at(doc, "attestation.x509.clientCertificates.primary.certificate"));
    model_json_free(doc);
    /* info without thumbprints: kept as well */
    doc = prepare_j_ok(STORE_ENROLLMENT, "dev-1",
                       x509_body("clientCertificates",
                                 json_pack("{s:{s:s}}", "info", "subjectName", "CN=x"), NULL),
                       stored);
    assert_string_equal(str_at(doc, "attestation.x509.clientCertificates.primary.certificate"),
                        str_at(stored, "attestation.x509.clientCertificates.primary.certificate"));
    model_json_free(doc);
    /* info naming another certificate: refused */
    entry = json_pack("{s:{s:s}}", "info", "sha256Thumbprint", sha256_other);
    expect_x509_fail(STORE_ENROLLMENT, x509_body("clientCertificates", entry, NULL), stored,
                     "info.sha256Thumbprint does not match the stored certificate");
    /* a new certificate replaces the stored one */
    doc = prepare_j_ok(STORE_ENROLLMENT, "dev-1",
                       x509_body("clientCertificates", cert_entry(pem2), NULL), stored);
    assert_string_equal(
        str_at(doc, "attestation.x509.clientCertificates.primary.info.sha256Thumbprint"),
        sha256_other);
    model_json_free(doc);
    /* keeping works per slot: no stored secondary to keep */
    expect_x509_fail(STORE_ENROLLMENT,
                     x509_body("clientCertificates", json_pack("{s:{}}", "info"),
                               json_pack("{s:{s:s}}", "info", "subjectName", "CN=x")),
                     stored, "clientCertificates.secondary needs a certificate");
    /* nothing is kept from an entity of another attestation type */
    doc = prepare_ok(STORE_ENROLLMENT, "dev-1", "{\"attestation\":{\"type\":\"none\"}}", NULL);
    expect_x509_fail(STORE_ENROLLMENT,
                     x509_body("clientCertificates", json_pack("{s:{}}", "info"), NULL), doc,
                     "clientCertificates.primary needs a certificate");
    model_json_free(doc);
    model_json_free(stored);
    free(pem);
    free(pem2);
    X509_free(leaf);
    X509_free(other);
    EVP_PKEY_free(k);
    EVP_PKEY_free(k2);
}

static void test_x509_groups(void **state)
{
    EVP_PKEY *ck = new_key(), *lk = new_key();
    X509 *ca = make_cert("Root CA", ck, NULL, NULL, true, -1, 365);
    X509 *leaf = make_cert("dev-1", lk, ca, ck, false, -1, 30);
    char *ca_pem = pem_of(ca), *leaf_pem = pem_of(leaf), *ca_der = der_b64_of(ca);
    char sha256[65];
    json_t *doc, *out;

    (void)state;
    x509_sha256_thumbprint(ca, sha256);
    doc = prepare_j_ok(STORE_GROUP, "g",
                       x509_body("signingCertificates", cert_entry(ca_pem), cert_entry(ca_der)),
                       NULL);
    assert_string_equal(
        str_at(doc, "attestation.x509.signingCertificates.primary.info.sha256Thumbprint"), sha256);
    assert_string_equal(
        str_at(doc, "attestation.x509.signingCertificates.secondary.info.subjectName"),
        "CN=Root CA");
    out = model_render(doc, "e", NULL, NULL, 0);
    assert_null(at(out, "attestation.x509.signingCertificates.primary.certificate"));
    assert_null(at(out, "attestation.x509.signingCertificates.secondary.certificate"));
    assert_non_null(at(out, "attestation.x509.signingCertificates.secondary.info"));
    model_json_free(out);
    model_json_free(doc);

    doc = prepare_j_ok(STORE_GROUP, "g",
                       x509_body("caReferences", json_string("my-ca.1"), json_string("other_ca")),
                       NULL);
    assert_string_equal(str_at(doc, "attestation.x509.caReferences.primary"), "my-ca.1");
    assert_string_equal(str_at(doc, "attestation.x509.caReferences.secondary"), "other_ca");
    model_json_free(doc);

    expect_x509_fail(STORE_GROUP, x509_body("signingCertificates", cert_entry(leaf_pem), NULL),
                     NULL, "signingCertificates.primary.certificate is not a CA certificate");
    expect_x509_fail(STORE_GROUP,
                     x509_body("signingCertificates", cert_entry("not a certificate"), NULL),
                     NULL, "signingCertificates.primary.certificate: ");
    expect_x509_fail(STORE_GROUP,
                     x509_body("signingCertificates",
                               json_pack("{s:{s:s}}", "info", "sha256Thumbprint", sha256), NULL),
                     NULL, "signingCertificates.primary needs a certificate");
    expect_x509_fail(STORE_GROUP, x509_body("clientCertificates", cert_entry(leaf_pem), NULL),
                     NULL, "clientCertificates is for individual enrollments");
    expect_x509_fail(STORE_ENROLLMENT,
                     x509_body("signingCertificates", cert_entry(ca_pem), NULL), NULL,
                     "signingCertificates is for enrollment groups");
    expect_x509_fail(STORE_ENROLLMENT, x509_body("caReferences", json_string("ca"), NULL), NULL,
                     "caReferences is for enrollment groups");
    expect_x509_fail(STORE_GROUP, x509_body("caReferences", json_string("a b"), NULL), NULL,
                     "caReferences.primary must be a CA name");
    expect_x509_fail(STORE_GROUP, x509_body("caReferences", json_string(""), NULL), NULL,
                     "caReferences.primary must be a CA name");
    expect_x509_fail(STORE_GROUP,
                     json_pack("{s:{s:s, s:{s:{s:s}, s:{s:o}}}}", "attestation", "type", "x509",
                               "x509", "caReferences", "primary", "ca", "signingCertificates",
                               "primary", cert_entry(ca_pem)),
                     NULL, "signingCertificates or caReferences, not both");
    expect_x509_fail(STORE_GROUP,
                     json_pack("{s:{s:s, s:{s:s}}}", "attestation", "type", "x509", "x509",
                               "signingCertificates", "x"),
                     NULL, "attestation.x509.signingCertificates must be an object");
    expect_x509_fail(STORE_ENROLLMENT,
                     x509_body("clientCertificates", cert_entry(""), NULL), NULL,
                     "clientCertificates.primary.certificate must be a string");
    free(ca_pem);
    free(leaf_pem);
    free(ca_der);
    X509_free(ca);
    X509_free(leaf);
    EVP_PKEY_free(ck);
    EVP_PKEY_free(lk);
}

static void test_x509_shared_certificates(void **state)
{
    EVP_PKEY *k = new_key(), *k2 = new_key();
    X509 *a = make_cert("dev-a", k, NULL, NULL, false, -1, 30);
    X509 *b = make_cert("dev-b", k2, NULL, NULL, false, -1, 30);
    char *pa = pem_of(a), *pb = pem_of(b);
    char sha256[65], sha1[41], tp[65];
    json_t *da, *db, *pin256, *pin1, *sym, *grp;
    const char *names[2];

    (void)state;
    x509_sha256_thumbprint(a, sha256);
    x509_sha1_thumbprint(a, sha1);
    da = prepare_j_ok(STORE_ENROLLMENT, "dev-a",
                      x509_body("clientCertificates", cert_entry(pa), NULL), NULL);
    db = prepare_j_ok(STORE_ENROLLMENT, "dev-b",
                      x509_body("clientCertificates", cert_entry(pb), cert_entry(pa)), NULL);
    pin256 = prepare_j_ok(STORE_ENROLLMENT, "dev-c",
                          x509_body("clientCertificates",
                                    json_pack("{s:{s:s}}", "info", "sha256Thumbprint", sha256),
                                    NULL),
                          NULL);
    pin1 = prepare_j_ok(STORE_ENROLLMENT, "dev-d",
                        x509_body("clientCertificates",
                                  json_pack("{s:{s:s}}", "info", "sha1Thumbprint", sha1), NULL),
                        NULL);
    sym = prepare_ok(STORE_ENROLLMENT, "dev-e", "{\"attestation\":{\"type\":\"symmetricKey\"}}",
                     NULL);
    tp[0] = '\0';
    assert_true(model_x509_shares_certificate(da, db, tp, sizeof(tp)));
    assert_string_equal(tp, sha256);
    assert_true(model_x509_shares_certificate(db, pin256, NULL, 0));
    assert_true(model_x509_shares_certificate(pin1, da, tp, sizeof(tp)));
    assert_string_equal(tp, sha1);
    /* a SHA-256 pin and a SHA-1 pin cannot be compared */
    assert_false(model_x509_shares_certificate(pin256, pin1, NULL, 0));
    assert_false(model_x509_shares_certificate(da, sym, NULL, 0));
    model_json_free(db);
    db = prepare_j_ok(STORE_ENROLLMENT, "dev-b",
                      x509_body("clientCertificates", cert_entry(pb), NULL), NULL);
    assert_false(model_x509_shares_certificate(da, db, NULL, 0));

    grp = prepare_j_ok(STORE_GROUP, "g",
                       x509_body("caReferences", json_string("Root-CA"), json_string("b")), NULL);
    assert_int_equal(model_x509_ca_references(grp, names), 2);
    assert_string_equal(names[0], "Root-CA");
    assert_string_equal(names[1], "b");
    assert_true(model_references_ca(grp, "root-ca"));
    assert_false(model_references_ca(grp, "root"));
    assert_int_equal(model_x509_ca_references(da, names), 0);
    assert_false(model_references_ca(sym, "b"));
    model_json_free(grp);
    model_json_free(da);
    model_json_free(db);
    model_json_free(pin256);
    model_json_free(pin1);
    model_json_free(sym);
    free(pa);
    free(pb);
    X509_free(a);
    X509_free(b);
    EVP_PKEY_free(k);
    EVP_PKEY_free(k2);
}

/* ---- output shaping ---- */

static void test_render_keys(void **state)
{
    json_t *doc, *out, *att;

    (void)state;
    doc = prepare_ok(STORE_ENROLLMENT, "dev-1",
                     "{\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":"
                     "{\"primaryKey\":\"" KEY32 "\",\"secondaryKey\":\"" KEY32B "\"}}}",
                     NULL);
    /* GET and query: no keys, the symmetricKey object stays */
    out = model_render(doc, "e1", "c", "u", 0);
    assert_non_null(at(out, "attestation.symmetricKey"));
    assert_null(at(out, "attestation.symmetricKey.primaryKey"));
    assert_null(at(out, "attestation.symmetricKey.secondaryKey"));
    assert_string_equal(str_at(out, "attestation.type"), "symmetricKey");
    model_json_free(out);
    /* the stored document is untouched */
    assert_string_equal(str_at(doc, "attestation.symmetricKey.primaryKey"), KEY32);
    /* PUT answer: keys echoed */
    out = model_render(doc, "e1", "c", "u", MODEL_WITH_KEYS);
    assert_string_equal(str_at(out, "attestation.symmetricKey.primaryKey"), KEY32);
    assert_string_equal(str_at(out, "attestation.symmetricKey.secondaryKey"), KEY32B);
    model_json_free(out);
    /* attestationmechanism: with secrets */
    att = model_attestation(doc);
    assert_string_equal(str_at(att, "symmetricKey.primaryKey"), KEY32);
    assert_string_equal(str_at(att, "symmetricKey.secondaryKey"), KEY32B);
    model_json_free(att);
    model_json_free(doc);
}

static void test_etags(void **state)
{
    static const struct {
        const char *in;
        const char *out; /* NULL = invalid */
    } cases[] = {
        {"\"8b830088-102e\"", "8b830088-102e"},
        {"8b830088-102e", "8b830088-102e"},
        {"W/\"8b830088\"", "8b830088"},
        {"  \"abc\"  ", "abc"},
        {"*", "*"},
        {"\"*\"", "*"},
        {"\"\"", NULL},
        {"", NULL},
        {"   ", NULL},
        {"W/", NULL},
        {"a\"b", NULL},
    };
    char out[64], q[64];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int r = model_etag_normalize(cases[i].in, out, sizeof(out));

        if (cases[i].out == NULL) {
            assert_int_equal(r, PROV_EINVAL);
        } else {
            assert_int_equal(r, 0);
            assert_string_equal(out, cases[i].out);
        }
    }
    assert_int_equal(model_etag_normalize("\"0123456789\"", out, 8), PROV_EINVAL);
    model_etag_quote("abc", q, sizeof(q));
    assert_string_equal(q, "\"abc\"");
}

static void test_continuation(void **state)
{
    static const char *const ids[] = {"a", "ab", "abc", "dev-001", "x.y_z:1-",
                                      "0123456789012345678901234567890123456789"};
    static const char *const bad[] = {"", "a", "!!!!", "ZGV2LTAwMQ==", "RGV2",
                                      "ZGV2LTAwMQ$", "Lg"};
    char tok[256], id[PROV_MAX_REG_ID + 1];

    (void)state;
    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
        model_continuation_encode(ids[i], tok, sizeof(tok));
        assert_null(strchr(tok, '='));
        assert_null(strchr(tok, '+'));
        assert_null(strchr(tok, '/'));
        assert_int_equal(model_continuation_decode(tok, id, sizeof(id)), 0);
        assert_string_equal(id, ids[i]);
    }
    /* padding, upper case ("Dev"), bad characters, "." (not an id) */
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(model_continuation_decode(bad[i], id, sizeof(id)), PROV_EINVAL);
}

/* ---- every 400 case ---- */

static const struct {
    enum store_kind kind;
    const char *id;
    const char *body;
    const char *msg; /* expected substring */
} invalid[] = {
    {STORE_ENROLLMENT, "d", "{}", "attestation is required"},
    {STORE_ENROLLMENT, "d", "{\"attestation\":null}", "attestation is required"},
    {STORE_ENROLLMENT, "d", "{\"attestation\":\"x\"}", "attestation must be an object"},
    {STORE_ENROLLMENT, "d", "{\"attestation\":{}}", "attestation.type is required"},
    {STORE_ENROLLMENT, "d", "{\"attestation\":{\"type\":3}}", "attestation.type must be a string"},
    {STORE_ENROLLMENT, "d", "{\"attestation\":{\"type\":\"sas\"}}",
     "must be none, tpm, x509 or symmetricKey"},
    {STORE_ENROLLMENT, "d",
     "{\"attestation\":{\"type\":\"symmetricKey\",\"x509\":{\"caReferences\":{}}}}",
     "does not match its 'x509' object"},
    {STORE_ENROLLMENT, "d", "{\"attestation\":{\"type\":\"none\",\"tpm\":{}}}",
     "does not match its 'tpm' object"},
    {STORE_ENROLLMENT, "d", "{\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":5}}",
     "attestation.symmetricKey must be an object"},
    {STORE_ENROLLMENT, "d",
     "{\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":{\"primaryKey\":\"!!!!\"}}}",
     "primaryKey must be base64 of 16 to 64 bytes"},
    {STORE_ENROLLMENT, "d",
     "{\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":{\"primaryKey\":\"" KEY15
     "\"}}}",
     "primaryKey must be base64 of 16 to 64 bytes"},
    {STORE_ENROLLMENT, "d",
     "{\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":{\"secondaryKey\":\"" KEY65
     "\"}}}",
     "secondaryKey must be base64 of 16 to 64 bytes"},
    {STORE_ENROLLMENT, "d",
     "{\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":{\"primaryKey\":12}}}",
     "primaryKey must be a string"},
    {STORE_ENROLLMENT, "d", "{\"attestation\":{\"type\":\"tpm\"}}",
     "attestation.tpm.endorsementKey is required"},
    {STORE_ENROLLMENT, "d", "{\"attestation\":{\"type\":\"tpm\",\"tpm\":{\"endorsementKey\":"
                            "\"not base64\"}}}",
     "endorsementKey must be base64"},
    {STORE_ENROLLMENT, "d", "{\"attestation\":{\"type\":\"tpm\",\"tpm\":{\"endorsementKey\":"
                            "\"" KEY16 "\",\"storageRootKey\":\"?\"}}}",
     "storageRootKey must be base64"},
    {STORE_ENROLLMENT, "d", "{\"attestation\":{\"type\":\"x509\"}}",
     "attestation.x509 is required"},
    {STORE_ENROLLMENT, "d", "{\"attestation\":{\"type\":\"x509\",\"x509\":{}}}",
     "needs clientCertificates, signingCertificates or caReferences"},
    {STORE_ENROLLMENT, "d", "{\"attestation\":{\"type\":\"x509\",\"x509\":{\"clientCertificates\":"
                            "{\"secondary\":{\"certificate\":\"x\"}}}}}",
     "clientCertificates.primary is required"},
    {STORE_GROUP, "g", "{\"attestation\":{\"type\":\"x509\",\"x509\":{\"caReferences\":"
                       "{\"primary\":7}}}}",
     "caReferences.primary must be a CA name"},
    {STORE_GROUP, "g", "{\"attestation\":{\"type\":\"tpm\",\"tpm\":{\"endorsementKey\":\"" KEY16
                       "\"}}}",
     "endorsementKey is for individual enrollments"},
    {STORE_ENROLLMENT, "d", "{\"registrationId\":\"other\",\"attestation\":{\"type\":\"none\"}}",
     "registrationId in the body does not match the id in the path"},
    {STORE_ENROLLMENT, "d", "{\"registrationId\":5,\"attestation\":{\"type\":\"none\"}}",
     "registrationId must be a string"},
    {STORE_GROUP, "g", "{\"enrollmentGroupId\":\"h\",\"attestation\":{\"type\":\"none\"}}",
     "enrollmentGroupId in the body does not match"},
    {STORE_ENROLLMENT, "d", "{\"deviceId\":\"\",\"attestation\":{\"type\":\"none\"}}",
     "deviceId must be 1 to 128"},
    {STORE_ENROLLMENT, "d", "{\"deviceId\":\"a b\",\"attestation\":{\"type\":\"none\"}}",
     "deviceId must be 1 to 128"},
    {STORE_ENROLLMENT, "d", "{\"deviceId\":[],\"attestation\":{\"type\":\"none\"}}",
     "deviceId must be 1 to 128"},
    {STORE_ENROLLMENT, "d", "{\"provisioningStatus\":\"on\",\"attestation\":{\"type\":\"none\"}}",
     "provisioningStatus must be enabled or disabled"},
    {STORE_ENROLLMENT, "d", "{\"provisioningStatus\":true,\"attestation\":{\"type\":\"none\"}}",
     "provisioningStatus must be enabled or disabled"},
    {STORE_ENROLLMENT, "d", "{\"allocationPolicy\":\"random\",\"attestation\":{\"type\":\"none\"}}",
     "allocationPolicy must be hashed, geoLatency, static or custom"},
    {STORE_ENROLLMENT, "d",
     "{\"iotHubs\":\"hub1.example.net\",\"attestation\":{\"type\":\"none\"}}",
     "iotHubs must be an array"},
    {STORE_ENROLLMENT, "d", "{\"iotHubs\":[1],\"attestation\":{\"type\":\"none\"}}",
     "iotHubs[0] must be a string"},
    {STORE_ENROLLMENT, "d",
     "{\"iotHubs\":[\"hub1.example.net\",\"evil.example.net\"],"
     "\"attestation\":{\"type\":\"none\"}}",
     "iotHubs[1] 'evil.example.net' is not a linked hub"},
    {STORE_ENROLLMENT, "d", "{\"iotHubHostName\":\"evil.example.net\",\"attestation\":"
                            "{\"type\":\"none\"}}",
     "iotHubHostName 'evil.example.net' is not a linked hub"},
    {STORE_ENROLLMENT, "d", "{\"allocationPolicy\":\"static\",\"attestation\":{\"type\":\"none\"}}",
     "static needs exactly one hub"},
    {STORE_ENROLLMENT, "d", "{\"allocationPolicy\":\"static\",\"iotHubs\":[\"hub1.example.net\","
                            "\"hub2.example.net\"],\"attestation\":{\"type\":\"none\"}}",
     "static needs exactly one hub"},
    {STORE_ENROLLMENT, "d", "{\"allocationPolicy\":\"static\",\"iotHubs\":[\"hub1.example.net\"],"
                            "\"iotHubHostName\":\"hub2.example.net\",\"attestation\":"
                            "{\"type\":\"none\"}}",
     "static needs exactly one hub"},
    {STORE_ENROLLMENT, "d", "{\"allocationPolicy\":\"custom\",\"attestation\":{\"type\":\"none\"}}",
     "custom needs customAllocationDefinition"},
    {STORE_GROUP, "g", "{\"allocationPolicy\":\"custom\",\"customAllocationDefinition\":"
                       "{\"apiVersion\":\"2021-10-01\"},\"attestation\":{\"type\":\"none\"}}",
     "webhookUrl must be an http(s) URL"},
    {STORE_GROUP, "g", "{\"allocationPolicy\":\"custom\",\"customAllocationDefinition\":"
                       "{\"webhookUrl\":\"ftp://x\",\"apiVersion\":\"2021-10-01\"},"
                       "\"attestation\":{\"type\":\"none\"}}",
     "webhookUrl must be an http(s) URL"},
    {STORE_GROUP, "g", "{\"allocationPolicy\":\"custom\",\"customAllocationDefinition\":"
                       "{\"webhookUrl\":\"https://x.example/\"},"
                       "\"attestation\":{\"type\":\"none\"}}",
     "apiVersion must be a string"},
    {STORE_GROUP, "g", "{\"customAllocationDefinition\":[],\"attestation\":{\"type\":\"none\"}}",
     "customAllocationDefinition must be an object"},
    {STORE_ENROLLMENT, "d", "{\"reprovisionPolicy\":{\"updateHubAssignment\":\"yes\"},"
                            "\"attestation\":{\"type\":\"none\"}}",
     "reprovisionPolicy.updateHubAssignment must be a boolean"},
    {STORE_ENROLLMENT, "d", "{\"reprovisionPolicy\":true,\"attestation\":{\"type\":\"none\"}}",
     "reprovisionPolicy must be an object"},
    {STORE_ENROLLMENT, "d",
     "{\"capabilities\":{\"iotEdge\":1},\"attestation\":{\"type\":\"none\"}}",
     "capabilities.iotEdge must be a boolean"},
    {STORE_ENROLLMENT, "d", "{\"capabilities\":[],\"attestation\":{\"type\":\"none\"}}",
     "capabilities must be an object"},
    {STORE_ENROLLMENT, "d", "{\"initialTwin\":[],\"attestation\":{\"type\":\"none\"}}",
     "initialTwin must be an object"},
    {STORE_ENROLLMENT, "d", "{\"initialTwin\":{\"tags\":1},\"attestation\":{\"type\":\"none\"}}",
     "initialTwin.tags must be an object"},
    {STORE_ENROLLMENT, "d", "{\"initialTwin\":{\"properties\":{\"desired\":\"x\"}},"
                            "\"attestation\":{\"type\":\"none\"}}",
     "initialTwin.properties.desired must be an object"},
    {STORE_ENROLLMENT, "d", "{\"optionalDeviceInformation\":3,\"attestation\":{\"type\":\"none\"}}",
     "optionalDeviceInformation must be an object"},
};

static void test_invalid_bodies(void **state)
{
    char err[384];

    (void)state;
    for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
        json_t *doc = (json_t *)1;
        int r = prepare(invalid[i].kind, invalid[i].id, invalid[i].body, NULL, &doc, NULL, err,
                        sizeof(err));

        if (r != PROV_EINVAL || strstr(err, invalid[i].msg) == NULL)
            fail_msg("case %zu: r=%d err='%s', expected '%s' for %s", i, r, err, invalid[i].msg,
                     invalid[i].body);
        assert_null(doc);
    }
}

static void test_body_not_object(void **state)
{
    json_t *arr = json_array();
    json_t *doc = NULL;
    const char *att = NULL;
    char err[128];

    (void)state;
    assert_int_equal(model_prepare(STORE_ENROLLMENT, "d", arr, NULL, hubs, NHUBS, &doc, &att, err,
                                   sizeof(err)),
                     PROV_EINVAL);
    assert_null(doc);
    json_decref(arr);
}

/* ---- service SAS ---- */

#define VEC_KEY "llbXt1AZ5RELJWOjp9Xm42MrmYYU6X6st66vl5mHb9Y="
#define VEC_SIG "gqZtnEfXGusua%2BqjDqm%2Fp8pSMUwKz9scRb2I82ZwpwU%3D"
#define VEC_SE 1795981266LL
#define VEC_TOKEN                                                                                 \
    "SharedAccessSignature sr=localhost&sig=" VEC_SIG "&skn=provisioningserviceowner&se=1795981266"

static struct config auth_cfg;

static void add_policy(const char *name, const char *b64, unsigned rights)
{
    struct cfg_policy *p = &auth_cfg.policies[auth_cfg.npolicies++];
    int n;

    snprintf(p->name, sizeof(p->name), "%s", name);
    n = b64_decode(b64, strlen(b64), p->key);
    assert_true(n > 0);
    p->keylen = (size_t)n;
    p->rights = rights;
}

static int auth_setup(void **state)
{
    (void)state;
    memset(&auth_cfg, 0, sizeof(auth_cfg));
    add_policy("ProvisioningServiceOwner", VEC_KEY, RIGHT_ALL);
    add_policy("reader", KEY32, RIGHT_ENROLLMENT_READ | RIGHT_REGISTRATION_READ);
    return 0;
}

static int check(const char *token, const char *host, const char *path, unsigned rights,
                 long long now, char *why, size_t whylen)
{
    const struct cfg_policy *p = NULL;
    int r;

    why[0] = '\0';
    r = service_auth_check(&auth_cfg, token, host, path, rights, now, &p, why, whylen);
    if (r == 0)
        assert_non_null(p);
    else
        assert_null(p);
    /* never the signature, whatever the outcome */
    assert_null(strstr(why, "gqZt"));
    return r;
}

static void test_sas_vector(void **state)
{
    char why[256];
    uint8_t key[64], mac[32];
    char b64[45];
    int n;

    (void)state;
    /* the raw vector first */
    n = b64_decode(VEC_KEY, strlen(VEC_KEY), key);
    assert_int_equal(n, 32);
    assert_int_equal(sas_compute(key, (size_t)n, "localhost", "1795981266", mac), 0);
    b64_encode(mac, 32, b64);
    assert_string_equal(b64, "gqZtnEfXGusua+qjDqm/p8pSMUwKz9scRb2I82ZwpwU=");

    /* skn matched case-insensitively, every right */
    assert_int_equal(check(VEC_TOKEN, "localhost", "/enrollments/dev-001", RIGHT_ALL,
                           VEC_SE - 3600, why, sizeof(why)),
                     0);
    /* Host with a port and other case */
    assert_int_equal(check(VEC_TOKEN, "LocalHost:8443", "/enrollments/dev-001",
                           RIGHT_ENROLLMENT_WRITE, VEC_SE - 3600, why, sizeof(why)),
                     0);
    /* within the 300 s skew, then past it */
    assert_int_equal(check(VEC_TOKEN, "localhost", "/", RIGHT_ENROLLMENT_READ, VEC_SE + 299, why,
                           sizeof(why)),
                     0);
    assert_int_equal(check(VEC_TOKEN, "localhost", "/", RIGHT_ENROLLMENT_READ, VEC_SE + 301, why,
                           sizeof(why)),
                     PROV_EAUTH);
    assert_non_null(strstr(why, "expired"));
}

static void test_sas_failures(void **state)
{
    char why[256];
    long long now = VEC_SE - 10;

    (void)state;
    assert_int_equal(check(NULL, "localhost", "/enrollments/x", 0, now, why, sizeof(why)),
                     PROV_EAUTH);
    assert_non_null(strstr(why, "no Authorization"));

    assert_int_equal(check("Bearer eyJhbGciOi.x.y", "localhost", "/enrollments/x", 0, now, why,
                           sizeof(why)),
                     PROV_EAUTH);
    assert_non_null(strstr(why, "bearer tokens are not supported"));

    assert_int_equal(check("SharedAccessSignature sr=localhost&se=1795981266&skn=x", "localhost",
                           "/enrollments/x", 0, now, why, sizeof(why)),
                     PROV_EAUTH);
    assert_non_null(strstr(why, "malformed"));

    assert_int_equal(check("Basic dXNlcjpwYXNz", "localhost", "/enrollments/x", 0, now, why,
                           sizeof(why)),
                     PROV_EAUTH);
    assert_non_null(strstr(why, "malformed"));

    assert_int_equal(check("SharedAccessSignature sr=localhost&sig=" VEC_SIG "&se=1795981266",
                           "localhost", "/enrollments/x", 0, now, why, sizeof(why)),
                     PROV_EAUTH);
    assert_non_null(strstr(why, "names no policy"));

    assert_int_equal(check("SharedAccessSignature sr=localhost&sig=" VEC_SIG
                           "&se=1795981266&skn=nobody",
                           "localhost", "/enrollments/x", 0, now, why, sizeof(why)),
                     PROV_EAUTH);
    assert_non_null(strstr(why, "unknown shared access policy"));

    /* the vector's signature under another policy's key */
    assert_int_equal(check("SharedAccessSignature sr=localhost&sig=" VEC_SIG
                           "&se=1795981266&skn=reader",
                           "localhost", "/enrollments/x", 0, now, why, sizeof(why)),
                     PROV_EAUTH);
    assert_non_null(strstr(why, "does not match policy"));

    /* tampered expiry */
    assert_int_equal(check("SharedAccessSignature sr=localhost&sig=" VEC_SIG
                           "&se=1795981267&skn=provisioningserviceowner",
                           "localhost", "/enrollments/x", 0, now, why, sizeof(why)),
                     PROV_EAUTH);
    assert_non_null(strstr(why, "does not match"));

    /* audience: another host, no host */
    assert_int_equal(check(VEC_TOKEN, "mydps.example.net", "/enrollments/x", 0, now, why,
                           sizeof(why)),
                     PROV_EAUTH);
    assert_non_null(strstr(why, "audience"));
    assert_int_equal(check(VEC_TOKEN, "localhostx", "/enrollments/x", 0, now, why, sizeof(why)),
                     PROV_EAUTH);
    assert_int_equal(check(VEC_TOKEN, NULL, "/enrollments/x", 0, now, why, sizeof(why)),
                     PROV_EAUTH);
    assert_non_null(strstr(why, "Host"));
}

static void test_sas_rights(void **state)
{
    char why[256];
    char *tok = sas_build("localhost", KEY32, "Reader", VEC_SE);

    (void)state;
    assert_non_null(tok);
    assert_int_equal(check(tok, "localhost", "/enrollments/x", RIGHT_ENROLLMENT_READ, VEC_SE - 5,
                           why, sizeof(why)),
                     0);
    assert_int_equal(check(tok, "localhost", "/registrations/x", RIGHT_REGISTRATION_READ,
                           VEC_SE - 5, why, sizeof(why)),
                     0);
    assert_int_equal(check(tok, "localhost", "/enrollments/x", RIGHT_ENROLLMENT_WRITE,
                           VEC_SE - 5, why, sizeof(why)),
                     PROV_EAUTH);
    assert_non_null(strstr(why, "lacks the EnrollmentWrite right"));
    assert_int_equal(check(tok, "localhost", "/registrations/x", RIGHT_REGISTRATION_WRITE,
                           VEC_SE - 5, why, sizeof(why)),
                     PROV_EAUTH);
    assert_non_null(strstr(why, "lacks the RegistrationStatusWrite right"));
    free(tok);
    assert_string_equal(service_right_name(RIGHT_ENROLLMENT_READ), "EnrollmentRead");
    assert_string_equal(service_right_name(RIGHT_REGISTRATION_READ), "RegistrationStatusRead");
}

static void test_sas_audience_path(void **state)
{
    static const struct {
        const char *resource;
        const char *host;
        const char *path;
        bool ok;
    } cases[] = {
        {"localhost", "localhost", "/enrollments/a", true},
        {"LOCALHOST:8443", "localhost", "/enrollments/a", true},
        {"localhost", "localhost:443", "/enrollments/a", true},
        {"localhost/enrollments", "localhost", "/enrollments/a", true},
        {"localhost/Enrollments/", "localhost", "/enrollments", true},
        {"localhost/enrollments", "localhost", "/ENROLLMENTS/a/attestationmechanism", true},
        {"localhost/enrollments/a", "localhost", "/enrollments/%61", true},
        {"localhost/enrollments", "localhost", "/enrollmentGroups/a", false},
        {"localhost/enrollments/a", "localhost", "/enrollments/ab", false},
        {"localhost/registrations", "localhost", "/enrollments/a", false},
        {"otherhost/enrollments", "localhost", "/enrollments/a", false},
        {"[::1]:8443", "[::1]", "/enrollments/a", true},
        {"[::1]", "[::2]:443", "/enrollments/a", false},
    };
    char why[256];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *tok = sas_build(cases[i].resource, VEC_KEY, "provisioningserviceowner", VEC_SE);
        int r;

        assert_non_null(tok);
        r = check(tok, cases[i].host, cases[i].path, RIGHT_ENROLLMENT_READ, VEC_SE - 5, why,
                  sizeof(why));
        if ((r == 0) != cases[i].ok)
            fail_msg("case %zu (%s vs %s%s): r=%d %s", i, cases[i].resource, cases[i].host,
                     cases[i].path, r, why);
        free(tok);
    }
}

/* The HMAC is over sr as sent: a raw mixed-case sr (Node) verifies too. */
static void test_sas_raw_sr(void **state)
{
    uint8_t key[64], mac[32];
    char sig[45], header[512];
    char *sigenc;
    char why[256];
    int n;

    (void)state;
    n = b64_decode(VEC_KEY, strlen(VEC_KEY), key);
    assert_int_equal(sas_compute(key, (size_t)n, "LocalHost", "1795981266", mac), 0);
    b64_encode(mac, 32, sig);
    sigenc = url_encode_alloc(sig);
    assert_non_null(sigenc);
    snprintf(header, sizeof(header),
             "SharedAccessSignature sr=LocalHost&sig=%s&skn=provisioningserviceowner&se=1795981266",
             sigenc);
    free(sigenc);
    assert_int_equal(check(header, "localhost", "/enrollments/a", RIGHT_ENROLLMENT_READ,
                           VEC_SE - 5, why, sizeof(why)),
                     0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_object),
        cmocka_unit_test(test_keys_generated_on_create),
        cmocka_unit_test(test_keys_partial_on_create),
        cmocka_unit_test(test_keys_kept_on_update),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_canonical_enums),
        cmocka_unit_test(test_members_kept_and_ignored),
        cmocka_unit_test(test_hubs),
        cmocka_unit_test(test_other_attestations),
        cmocka_unit_test(test_x509_client_certificate),
        cmocka_unit_test(test_x509_thumbprint_pins),
        cmocka_unit_test(test_x509_keep_on_update),
        cmocka_unit_test(test_x509_groups),
        cmocka_unit_test(test_x509_shared_certificates),
        cmocka_unit_test(test_render_keys),
        cmocka_unit_test(test_etags),
        cmocka_unit_test(test_continuation),
        cmocka_unit_test(test_invalid_bodies),
        cmocka_unit_test(test_body_not_object),
        cmocka_unit_test_setup(test_sas_vector, auth_setup),
        cmocka_unit_test_setup(test_sas_failures, auth_setup),
        cmocka_unit_test_setup(test_sas_rights, auth_setup),
        cmocka_unit_test_setup(test_sas_audience_path, auth_setup),
        cmocka_unit_test_setup(test_sas_raw_sr, auth_setup),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
