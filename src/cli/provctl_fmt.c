/*
 * provctl: human-readable output. Every string that came from the server is
 * written through put_safe, so control characters cannot reach the terminal.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/util.h"
#include "provctl.h"

static void put_safe(FILE *f, const char *s)
{
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;

        fputc(c < 0x20 || c == 0x7f ? '?' : c, f);
    }
}

/* Member as a string, or NULL when absent or not a string. */
static const char *str_member(const json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

/* Like str_member, with a fallback. */
static const char *str_or(const json_t *o, const char *key, const char *dflt)
{
    const char *s = str_member(o, key);

    return s != NULL && *s != '\0' ? s : dflt;
}

/* "2026-11-29T18:50:37.6601234Z" -> "2026-11-29T18:50:37Z" into out[32]. */
static const char *short_time(const char *t, char *out, size_t outlen)
{
    const char *dot;

    if (t == NULL || *t == '\0')
        return "-";
    dot = strchr(t, '.');
    if (dot == NULL || dot - t > 40 || strchr(dot, 'Z') == NULL)
        return t;
    snprintf(out, outlen, "%.*sZ", (int)(dot - t), t);
    return out;
}

static const char *entity_id(enum pc_resource res, const json_t *e)
{
    if (res == PC_RES_GROUP)
        return str_or(e, "enrollmentGroupId", "?");
    return str_or(e, "registrationId", "?");
}

static const char *attestation_type(const json_t *e)
{
    return str_or(json_object_get(e, "attestation"), "type", "none");
}

static void put_hubs(FILE *f, const json_t *e)
{
    const json_t *hubs = json_object_get(e, "iotHubs");
    const char *legacy = str_member(e, "iotHubHostName");
    size_t n = json_is_array(hubs) ? json_array_size(hubs) : 0;

    if (n == 0) {
        if (legacy != NULL && *legacy != '\0') {
            fputs("hub ", f);
            put_safe(f, legacy);
        } else {
            fputs("all linked hubs", f);
        }
        return;
    }
    fputs(n == 1 ? "hub " : "hubs ", f);
    for (size_t i = 0; i < n; i++) {
        const char *h = json_string_value(json_array_get(hubs, i));

        if (i > 0)
            fputc(',', f);
        put_safe(f, h != NULL ? h : "?");
    }
}

/*
 * One certificate line for X.509 attestation (info only; bodies are never
 * returned): subject, thumbprint, expiry; a thumbprint pin has no subject.
 */
static void put_cert(FILE *f, const char *label, const json_t *cert)
{
    const json_t *info = json_object_get(cert, "info");
    const char *subject = str_member(info, "subjectName");
    const char *sha256 = str_member(info, "sha256Thumbprint");
    const char *sha1 = str_member(info, "sha1Thumbprint");

    if (!json_is_object(cert))
        return;
    fprintf(f, "  %s: ", label);
    if (subject != NULL)
        put_safe(f, subject);
    else
        fputs(sha256 != NULL || sha1 != NULL ? "pinned by thumbprint" : "(no info)", f);
    if (sha256 != NULL) {
        fputs(", sha256 ", f);
        put_safe(f, sha256);
    } else if (sha1 != NULL) {
        fputs(", sha1 ", f);
        put_safe(f, sha1);
    }
    if (str_member(info, "notAfterUtc") != NULL) {
        fputs(", expires ", f);
        put_safe(f, str_member(info, "notAfterUtc"));
    }
    fputc('\n', f);
}

static void put_attestation_details(FILE *f, const json_t *e)
{
    const json_t *att = json_object_get(e, "attestation");
    const json_t *x509 = json_object_get(att, "x509");
    const json_t *tpm = json_object_get(att, "tpm");

    if (json_is_object(x509)) {
        static const char *const kinds[] = {"clientCertificates", "signingCertificates"};
        const json_t *ca = json_object_get(x509, "caReferences");

        for (size_t i = 0; i < 2; i++) {
            const json_t *c = json_object_get(x509, kinds[i]);

            put_cert(f, i == 0 ? "primary certificate" : "primary signing certificate",
                     json_object_get(c, "primary"));
            put_cert(f, i == 0 ? "secondary certificate" : "secondary signing certificate",
                     json_object_get(c, "secondary"));
        }
        if (json_is_object(ca)) {
            fputs("  ca reference: ", f);
            put_safe(f, str_or(ca, "primary", "-"));
            if (str_member(ca, "secondary") != NULL) {
                fputs(", secondary ", f);
                put_safe(f, str_member(ca, "secondary"));
            }
            fputc('\n', f);
        }
    }
    if (json_is_object(tpm) && str_member(tpm, "endorsementKey") != NULL)
        fprintf(f, "  endorsement key: %zu base64 characters\n",
                strlen(str_member(tpm, "endorsementKey")));
}

static void put_json_line(FILE *f, const char *label, const json_t *v)
{
    char *s = json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);

    if (s == NULL)
        return;
    fprintf(f, "  %s: ", label);
    put_safe(f, s);
    fputc('\n', f);
    free(s);
}

static void put_dates(FILE *f, const json_t *o)
{
    char a[48], b[48];

    fprintf(f, "  created: ");
    put_safe(f, short_time(str_member(o, "createdDateTimeUtc"), a, sizeof(a)));
    fprintf(f, ", updated: ");
    put_safe(f, short_time(str_member(o, "lastUpdatedDateTimeUtc"), b, sizeof(b)));
    fputc('\n', f);
}

/* "assigned, hub H, device id D" */
static void put_registration_summary(FILE *f, const json_t *r)
{
    const char *hub = str_member(r, "assignedHub");
    const char *dev = str_member(r, "deviceId");

    put_safe(f, str_or(r, "status", "unknown"));
    if (hub != NULL && *hub != '\0') {
        fputs(", hub ", f);
        put_safe(f, hub);
    }
    if (dev != NULL && *dev != '\0') {
        fputs(", device id ", f);
        put_safe(f, dev);
    }
}

void pc_print_entity(FILE *f, enum pc_resource res, const json_t *e)
{
    const json_t *cap = json_object_get(e, "capabilities");
    const json_t *def = json_object_get(e, "customAllocationDefinition");
    const json_t *rp = json_object_get(e, "reprovisionPolicy");
    const json_t *twin = json_object_get(e, "initialTwin");
    const json_t *rs = json_object_get(e, "registrationState");

    fprintf(f, "%s ", pc_res_name(res));
    put_safe(f, entity_id(res, e));
    fputs(": ", f);
    put_safe(f, attestation_type(e));
    fputs(", ", f);
    put_safe(f, str_or(e, "provisioningStatus", "enabled"));
    if (res == PC_RES_ENROLLMENT) {
        fputs(", device id ", f);
        put_safe(f, str_or(e, "deviceId", entity_id(res, e)));
    }
    fputs(", ", f);
    put_hubs(f, e);
    fputc('\n', f);

    fputs("  allocation policy: ", f);
    put_safe(f, str_or(e, "allocationPolicy", "service default"));
    fputc('\n', f);
    if (json_is_object(def)) {
        fputs("  webhook: ", f);
        put_safe(f, str_or(def, "webhookUrl", "-"));
        fputs(" (api ", f);
        put_safe(f, str_or(def, "apiVersion", "-"));
        fputs(")\n", f);
    }
    fprintf(f, "  iot edge: %s\n", json_is_true(json_object_get(cap, "iotEdge")) ? "yes" : "no");
    if (json_is_object(rp))
        fprintf(f, "  reprovision: update hub assignment %s, migrate device data %s\n",
                json_is_false(json_object_get(rp, "updateHubAssignment")) ? "no" : "yes",
                json_is_false(json_object_get(rp, "migrateDeviceData")) ? "no" : "yes");
    put_attestation_details(f, e);
    if (twin != NULL && !json_is_null(twin))
        put_json_line(f, "initial twin", twin);
    if (json_is_object(rs)) {
        char t[48];

        fputs("  registration: ", f);
        put_registration_summary(f, rs);
        fputs(" (", f);
        put_safe(f, short_time(str_member(rs, "lastUpdatedDateTimeUtc"), t, sizeof(t)));
        fputs(")\n", f);
    }
    if (str_member(e, "etag") != NULL) {
        fputs("  etag: ", f);
        put_safe(f, str_member(e, "etag"));
        fputc('\n', f);
    }
    put_dates(f, e);
}

void pc_print_registration(FILE *f, const json_t *r)
{
    const json_t *code = json_object_get(r, "errorCode");
    const char *msg = str_member(r, "errorMessage");
    const json_t *payload = json_object_get(r, "payload");

    fputs("registration ", f);
    put_safe(f, str_or(r, "registrationId", "?"));
    fputs(": ", f);
    put_registration_summary(f, r);
    fputc('\n', f);
    if (str_member(r, "substatus") != NULL) {
        fputs("  substatus: ", f);
        put_safe(f, str_member(r, "substatus"));
        fputc('\n', f);
    }
    if ((json_is_integer(code) && json_integer_value(code) != 0) || (msg != NULL && *msg)) {
        fprintf(f, "  error: %" JSON_INTEGER_FORMAT " ",
                json_is_integer(code) ? json_integer_value(code) : (json_int_t)0);
        put_safe(f, msg != NULL ? msg : "");
        fputc('\n', f);
    }
    if (payload != NULL && !json_is_null(payload))
        put_json_line(f, "payload", payload);
    if (str_member(r, "etag") != NULL) {
        fputs("  etag: ", f);
        put_safe(f, str_member(r, "etag"));
        fputc('\n', f);
    }
    put_dates(f, r);
}

int pc_print_keys(FILE *f, const json_t *att)
{
    const json_t *sk = json_object_get(att, "symmetricKey");
    const char *p = str_member(sk, "primaryKey");
    const char *s = str_member(sk, "secondaryKey");
    int n = 0;

    if (p != NULL) {
        fputs("primary key: ", f);
        put_safe(f, p);
        fputc('\n', f);
        n++;
    }
    if (s != NULL) {
        fputs("secondary key: ", f);
        put_safe(f, s);
        fputc('\n', f);
        n++;
    }
    return n;
}

void pc_print_ca(FILE *f, const json_t *c)
{
    const json_t *p = json_object_get(c, "properties");

    fputs("ca ", f);
    put_safe(f, str_or(c, "name", "?"));
    fputs(json_is_true(json_object_get(p, "isVerified")) ? ": verified" : ": unverified", f);
    fputs(", subject ", f);
    put_safe(f, str_or(p, "subject", "-"));
    fputc('\n', f);
    fputs("  expires: ", f);
    put_safe(f, str_or(p, "expiry", "-"));
    fputs("\n  thumbprint: ", f);
    put_safe(f, str_or(p, "thumbprint", "-"));
    fputc('\n', f);
    if (str_member(c, "etag") != NULL) {
        fputs("  etag: ", f);
        put_safe(f, str_member(c, "etag"));
        fputc('\n', f);
    }
    fputs("  created: ", f);
    put_safe(f, str_or(p, "created", "-"));
    fputs(", updated: ", f);
    put_safe(f, str_or(p, "updated", "-"));
    fputc('\n', f);
}

/* ---- tables ----------------------------------------------------------- */

#define MAX_COLS 5

struct table {
    size_t ncols;
    const char *head[MAX_COLS];
    size_t width[MAX_COLS];
};

/* The cells of one row of the table; the time text may live in tbuf. */
static void row_cells(enum pc_resource res, const json_t *e, const char **cells, char *tbuf,
                      size_t tlen)
{
    const char *updated = short_time(str_member(e, "lastUpdatedDateTimeUtc"), tbuf, tlen);

    if (res == PC_RES_CA) {
        const json_t *p = json_object_get(e, "properties");

        cells[0] = str_or(e, "name", "?");
        cells[1] = json_is_true(json_object_get(p, "isVerified")) ? "yes" : "no";
        cells[2] = str_or(p, "subject", "-");
        cells[3] = str_or(p, "expiry", "-");
    } else if (res == PC_RES_REGISTRATION) {
        cells[0] = str_or(e, "registrationId", "?");
        cells[1] = str_or(e, "status", "-");
        cells[2] = str_or(e, "assignedHub", "-");
        cells[3] = str_or(e, "deviceId", "-");
        cells[4] = updated;
    } else {
        cells[0] = entity_id(res, e);
        cells[1] = attestation_type(e);
        cells[2] = str_or(e, "provisioningStatus", "enabled");
        cells[3] = updated;
    }
}

static void put_row(FILE *f, const struct table *t, const char **cells)
{
    for (size_t c = 0; c < t->ncols; c++) {
        size_t len = strlen(cells[c]);

        put_safe(f, cells[c]);
        if (c + 1 < t->ncols) {
            for (size_t k = len; k < t->width[c] + 2; k++)
                fputc(' ', f);
        }
    }
    fputc('\n', f);
}

void pc_print_list(FILE *f, enum pc_resource res, const json_t *arr)
{
    struct table t = {0};
    size_t n = json_is_array(arr) ? json_array_size(arr) : 0;
    const char *cells[MAX_COLS];
    char tbuf[48];
    const char *noun;

    if (res == PC_RES_REGISTRATION) {
        static const char *const h[] = {"ID", "STATUS", "HUB", "DEVICE ID", "UPDATED"};

        t.ncols = 5;
        memcpy(t.head, h, sizeof(h));
        noun = "registration";
    } else if (res == PC_RES_CA) {
        static const char *const h[] = {"NAME", "VERIFIED", "SUBJECT", "EXPIRES"};

        t.ncols = 4;
        memcpy(t.head, h, sizeof(h));
        noun = "CA certificate";
    } else {
        static const char *const h[] = {"ID", "ATTESTATION", "STATUS", "UPDATED"};

        t.ncols = 4;
        memcpy(t.head, h, sizeof(h));
        noun = res == PC_RES_GROUP ? "enrollment group" : "enrollment";
    }
    for (size_t c = 0; c < t.ncols; c++)
        t.width[c] = strlen(t.head[c]);
    for (size_t i = 0; i < n; i++) {
        row_cells(res, json_array_get(arr, i), cells, tbuf, sizeof(tbuf));
        for (size_t c = 0; c < t.ncols; c++) {
            size_t len = strlen(cells[c]);

            if (len > t.width[c])
                t.width[c] = len;
        }
    }
    if (n > 0) {
        put_row(f, &t, t.head);
        for (size_t i = 0; i < n; i++) {
            row_cells(res, json_array_get(arr, i), cells, tbuf, sizeof(tbuf));
            put_row(f, &t, cells);
        }
    }
    fprintf(f, "%zu %s%s\n", n, noun, n == 1 ? "" : "s");
}

/* ---- errors ----------------------------------------------------------- */

static const char *reason_phrase(long status)
{
    const char *phrase = http_reason_phrase((int)status);

    return phrase != NULL ? phrase : "HTTP error";
}

/* Copies s into out, control characters replaced, cut at the first line end. */
static void copy_line(char *out, size_t outlen, const char *s, size_t len)
{
    size_t o = 0;

    if (outlen == 0)
        return;
    for (size_t i = 0; i < len && o + 1 < outlen; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c == '\n' || c == '\r' || c == '\0')
            break;
        out[o++] = (char)(c < 0x20 || c == 0x7f ? '?' : c);
    }
    out[o] = '\0';
}

void pc_format_http_error(long status, const char *body, size_t bodylen, char *out,
                          size_t outlen)
{
    json_t *j = NULL;
    char msg[512] = "", code[32] = "";

    if (body != NULL && bodylen > 0)
        j = json_loadb(body, bodylen, 0, NULL);
    if (json_is_object(j)) {
        const json_t *c = json_object_get(j, "errorCode");
        const char *m = str_member(j, "message");

        if (m == NULL)
            m = str_member(j, "Message"); /* IoT Hub style */
        if (json_is_integer(c))
            snprintf(code, sizeof(code), " %" JSON_INTEGER_FORMAT, json_integer_value(c));
        else if (json_is_string(c))
            snprintf(code, sizeof(code), " %.24s", json_string_value(c));
        if (m != NULL)
            copy_line(msg, sizeof(msg), m, strlen(m));
    }
    json_decref(j);
    if (msg[0] != '\0') {
        /* copy_line already removed control characters from both parts */
        for (char *p = code; *p != '\0'; p++) {
            if ((unsigned char)*p < 0x20)
                *p = '?';
        }
        snprintf(out, outlen, "%ld%s: %s", status, code, msg);
        return;
    }
    if (body != NULL && bodylen > 0)
        copy_line(msg, 201, body, bodylen);
    if (msg[0] != '\0')
        snprintf(out, outlen, "%ld%s %s: %s", status, code, reason_phrase(status), msg);
    else
        snprintf(out, outlen, "%ld%s %s", status, code, reason_phrase(status));
}
