/*
 * X.509 helpers on OpenSSL 3. Chains are verified by X509_verify_cert with an
 * X509_STORE of anchors (partial chains allowed, strict RFC 5280 checks, TLS
 * client purpose); this file only sets the parameters and turns OpenSSL's
 * verdict into words. Every public function leaves the OpenSSL error queue as
 * it found it (ERR_set_mark / ERR_pop_to_mark), so nothing caused here leaks
 * into a later TLS call on the same thread.
 */
#include "x509.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include "../common/errors.h"
#include "../common/util.h"

/* ---- small text buffer ------------------------------------------------------------------- */

/* A growable NUL-terminated string; oom latches the first allocation failure. */
struct tbuf {
    char *p;
    size_t len, cap;
    bool oom;
};

static void tb_addn(struct tbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        char *np;

        while (cap < b->len + n + 1)
            cap *= 2;
        if ((np = realloc(b->p, cap)) == NULL) {
            b->oom = true;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void tb_add(struct tbuf *b, const char *s)
{
    tb_addn(b, s, strlen(s));
}

/* Takes the string out of b (an empty string when nothing was added); NULL on OOM. */
static char *tb_take(struct tbuf *b)
{
    char *s;

    if (!b->oom && b->p == NULL)
        tb_addn(b, "", 0);
    if (b->oom) {
        free(b->p);
        b->p = NULL;
        return NULL;
    }
    s = b->p;
    b->p = NULL;
    return s;
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v';
}

/* ---- parsing ----------------------------------------------------------------------------- */

static bool all_space(const char *p, const char *end)
{
    for (; p < end; p++) {
        if (!is_space(*p))
            return false;
    }
    return true;
}

/*
 * One PEM block found in text: [begin, end) runs from "-----BEGIN" to the end
 * of the END line (its newline included when there is one).
 */
struct pem_block {
    const char *begin, *end;
    char label[64];
};

/*
 * Finds the next PEM block in [p, end). Returns 1 and fills *blk, 0 when there
 * is no further BEGIN line, -1 (with *why) for a BEGIN line without its END.
 */
static int pem_next(const char *p, const char *end, struct pem_block *blk, const char **why)
{
    static const char begin_tag[] = "-----BEGIN ";
    const char *b = memmem(p, (size_t)(end - p), begin_tag, sizeof(begin_tag) - 1);
    const char *lab, *lab_end, *q;
    char end_tag[96];
    int n;

    if (b == NULL)
        return 0;
    lab = b + sizeof(begin_tag) - 1;
    for (lab_end = lab; lab_end < end && *lab_end != '-' && *lab_end != '\n'; lab_end++)
        ;
    if (end - lab_end < 5 || memcmp(lab_end, "-----", 5) != 0 || lab_end == lab ||
        (size_t)(lab_end - lab) >= sizeof(blk->label)) {
        *why = "malformed PEM BEGIN line";
        return -1;
    }
    memcpy(blk->label, lab, (size_t)(lab_end - lab));
    blk->label[lab_end - lab] = '\0';
    n = snprintf(end_tag, sizeof(end_tag), "-----END %s-----", blk->label);
    if (n < 0 || (size_t)n >= sizeof(end_tag)) {
        *why = "malformed PEM BEGIN line";
        return -1;
    }
    q = memmem(lab_end + 5, (size_t)(end - (lab_end + 5)), end_tag, (size_t)n);
    if (q == NULL) {
        *why = "PEM block without its END line";
        return -1;
    }
    q += n;
    if (q < end && *q == '\r')
        q++;
    if (q < end && *q == '\n')
        q++;
    blk->begin = b;
    blk->end = q;
    return 1;
}

static bool label_is_cert(const char *label)
{
    return strcmp(label, "CERTIFICATE") == 0 || strcmp(label, "X509 CERTIFICATE") == 0;
}

static const char *label_refusal(const char *label)
{
    if (strstr(label, "PRIVATE KEY") != NULL)
        return "a private key is not a certificate";
    if (strstr(label, "CERTIFICATE REQUEST") != NULL)
        return "a certificate request is not a certificate";
    return "unexpected PEM block (expected CERTIFICATE)";
}

/* DER to X509, refusing trailing bytes. */
static X509 *der_to_cert(const unsigned char *der, long len, const char **why)
{
    const unsigned char *p = der;
    X509 *x = d2i_X509(NULL, &p, len);

    if (x == NULL) {
        *why = "not a valid X.509 certificate";
        return NULL;
    }
    if (p != der + len) {
        X509_free(x);
        *why = "trailing data after the certificate";
        return NULL;
    }
    return x;
}

/* Decodes one CERTIFICATE block found by pem_next. */
static X509 *pem_block_cert(const struct pem_block *blk, const char **why)
{
    BIO *bio = BIO_new_mem_buf(blk->begin, (int)(blk->end - blk->begin));
    char *name = NULL, *header = NULL;
    unsigned char *data = NULL;
    long len = 0;
    X509 *x = NULL;

    if (bio == NULL) {
        *why = "out of memory";
        return NULL;
    }
    if (PEM_read_bio(bio, &name, &header, &data, &len) != 1) {
        *why = "malformed PEM certificate (bad base64)";
        goto out;
    }
    if (!label_is_cert(name)) {
        *why = label_refusal(name);
        goto out;
    }
    if (header != NULL && header[0] != '\0') {
        *why = "unexpected PEM headers in a certificate";
        goto out;
    }
    x = der_to_cert(data, len, why);
out:
    OPENSSL_free(name);
    OPENSSL_free(header);
    OPENSSL_free(data);
    BIO_free(bio);
    return x;
}

static X509 *parse_pem_one(const char *b, const char *e, const char **why)
{
    struct pem_block blk, next;
    X509 *x;
    int r;

    if ((r = pem_next(b, e, &blk, why)) <= 0) {
        if (r == 0)
            *why = "no PEM certificate found";
        return NULL;
    }
    if (blk.begin != b) {
        *why = "unexpected text before the certificate";
        return NULL;
    }
    if (!label_is_cert(blk.label)) {
        *why = label_refusal(blk.label);
        return NULL;
    }
    if (!all_space(blk.end, e)) {
        r = pem_next(blk.end, e, &next, why);
        if (r > 0 && !label_is_cert(next.label))
            *why = label_refusal(next.label);
        else if (r > 0)
            *why = "more than one certificate (expected exactly one)";
        else
            *why = "trailing data after the certificate";
        return NULL;
    }
    x = pem_block_cert(&blk, why);
    return x;
}

static bool is_b64_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '+' || c == '/' || c == '=';
}

/* Bare base64 DER, line breaks allowed. */
static X509 *parse_b64_der(const char *b, const char *e, const char **why)
{
    size_t n = 0, len = (size_t)(e - b);
    char *compact = malloc(len + 1);
    uint8_t *der = NULL;
    int dlen;
    X509 *x = NULL;

    if (compact == NULL) {
        *why = "out of memory";
        return NULL;
    }
    for (const char *p = b; p < e; p++) {
        if (is_space(*p))
            continue;
        if (!is_b64_char(*p)) {
            *why = "not a certificate (neither PEM nor base64 DER)";
            goto out;
        }
        compact[n++] = *p;
    }
    compact[n] = '\0';
    if ((der = malloc(b64_decoded_max(n) + 1)) == NULL) {
        *why = "out of memory";
        goto out;
    }
    if ((dlen = b64_decode(compact, n, der)) <= 0) {
        *why = "not a certificate (invalid base64)";
        goto out;
    }
    if ((x = der_to_cert(der, dlen, why)) == NULL) {
        const unsigned char *p = der;
        EVP_PKEY *k = d2i_AutoPrivateKey(NULL, &p, dlen);

        if (k != NULL)
            *why = "a private key is not a certificate";
        EVP_PKEY_free(k);
    }
out:
    if (der != NULL)
        prov_freezero(der, b64_decoded_max(n) + 1);
    free(compact);
    return x;
}

/* Checks the size and trims surrounding whitespace; false with *why when unusable. */
static bool input_span(const char *text, size_t max, const char **b, const char **e,
                       const char **why)
{
    size_t len;

    if (text == NULL) {
        *why = "no certificate";
        return false;
    }
    len = strnlen(text, max + 1);
    if (len > max) {
        *why = max == PROV_X509_MAX_TEXT ? "certificate text larger than 64 KB"
                                         : "certificate bundle too large";
        return false;
    }
    *b = text;
    *e = text + len;
    while (*b < *e && is_space(**b))
        (*b)++;
    while (*e > *b && is_space((*e)[-1]))
        (*e)--;
    if (*b == *e) {
        *why = "empty certificate";
        return false;
    }
    return true;
}

X509 *x509_parse_one(const char *text, const char **why)
{
    const char *dummy, *b, *e;
    X509 *x = NULL;

    if (why == NULL)
        why = &dummy;
    *why = NULL;
    if (!input_span(text, PROV_X509_MAX_TEXT, &b, &e, why))
        return NULL;
    ERR_set_mark();
    if ((size_t)(e - b) >= 5 && memcmp(b, "-----", 5) == 0)
        x = parse_pem_one(b, e, why);
    else
        x = parse_b64_der(b, e, why);
    ERR_pop_to_mark();
    if (x != NULL)
        *why = NULL;
    return x;
}

STACK_OF(X509) *x509_parse_pem_chain(const char *text, const char **why)
{
    const char *dummy, *b, *e, *p;
    STACK_OF(X509) *chain = NULL;
    struct pem_block blk;
    int r;

    if (why == NULL)
        why = &dummy;
    *why = NULL;
    if (!input_span(text, PROV_X509_MAX_BUNDLE, &b, &e, why))
        return NULL;
    ERR_set_mark();
    if ((chain = sk_X509_new_null()) == NULL) {
        *why = "out of memory";
        goto fail;
    }
    for (p = b; (r = pem_next(p, e, &blk, why)) > 0; p = blk.end) {
        X509 *x;

        if (!label_is_cert(blk.label)) {
            *why = label_refusal(blk.label);
            goto fail;
        }
        if (sk_X509_num(chain) >= PROV_X509_MAX_BUNDLE_CERTS) {
            *why = "too many certificates in the bundle";
            goto fail;
        }
        if ((x = pem_block_cert(&blk, why)) == NULL)
            goto fail;
        if (!sk_X509_push(chain, x)) {
            X509_free(x);
            *why = "out of memory";
            goto fail;
        }
    }
    if (r < 0)
        goto fail;
    if (sk_X509_num(chain) == 0) {
        *why = "no PEM certificate found";
        goto fail;
    }
    ERR_pop_to_mark();
    return chain;
fail:
    sk_X509_pop_free(chain, X509_free);
    ERR_pop_to_mark();
    return NULL;
}

char *x509_to_pem(X509 *cert)
{
    BIO *bio;
    char *data = NULL, *out = NULL;
    long n;

    if (cert == NULL)
        return NULL;
    ERR_set_mark();
    if ((bio = BIO_new(BIO_s_mem())) == NULL)
        goto out;
    if (PEM_write_bio_X509(bio, cert) != 1)
        goto out;
    if ((n = BIO_get_mem_data(bio, &data)) <= 0)
        goto out;
    if ((out = malloc((size_t)n + 1)) == NULL)
        goto out;
    memcpy(out, data, (size_t)n);
    out[n] = '\0';
out:
    BIO_free(bio);
    ERR_pop_to_mark();
    return out;
}

/* ---- names, times, digests ---------------------------------------------------------------- */

static void thumbprint(X509 *cert, const EVP_MD *md, char *out, size_t mdlen)
{
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int n = 0;

    out[0] = '\0';
    if (cert == NULL)
        return;
    ERR_set_mark();
    if (X509_digest(cert, md, d, &n) == 1 && n == mdlen)
        hex_encode(d, n, out, true);
    ERR_pop_to_mark();
}

void x509_sha1_thumbprint(X509 *cert, char out[41])
{
    thumbprint(cert, prov_md_sha1(), out, 20);
}

void x509_sha256_thumbprint(X509 *cert, char out[65])
{
    thumbprint(cert, prov_md_sha256(), out, 32);
}

/* "YYYY-MM-DDTHH:MM:SSZ"; false (out = "") when the ASN.1 time is unreadable. */
static bool format_time(const ASN1_TIME *t, char *out, size_t outlen)
{
    struct tm tm;

    out[0] = '\0';
    if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1)
        return false;
    return strftime(out, outlen, "%Y-%m-%dT%H:%M:%SZ", &tm) > 0;
}

/* The attribute keys .NET (and Windows CertNameToStr) print; others are "OID.n.n.n". */
static const struct {
    int nid;
    const char *key;
} name_keys[] = {
    {NID_commonName, "CN"},
    {NID_organizationalUnitName, "OU"},
    {NID_organizationName, "O"},
    {NID_localityName, "L"},
    {NID_stateOrProvinceName, "S"},
    {NID_countryName, "C"},
    {NID_pkcs9_emailAddress, "E"},
    {NID_streetAddress, "STREET"},
    {NID_domainComponent, "DC"},
    {NID_serialNumber, "SERIALNUMBER"},
    {NID_title, "T"},
    {NID_givenName, "G"},
    {NID_surname, "SN"},
    {NID_initials, "I"},
    {NID_postalCode, "PostalCode"},
    {NID_description, "Description"},
    {NID_postOfficeBox, "POBox"},
    {NID_telephoneNumber, "Phone"},
};

static void add_key(struct tbuf *b, const ASN1_OBJECT *obj)
{
    int nid = OBJ_obj2nid(obj);
    char oid[128];

    for (size_t i = 0; i < sizeof(name_keys) / sizeof(name_keys[0]); i++) {
        if (name_keys[i].nid == nid && nid != NID_undef) {
            tb_add(b, name_keys[i].key);
            return;
        }
    }
    if (OBJ_obj2txt(oid, sizeof(oid), obj, 1) <= 0)
        snprintf(oid, sizeof(oid), "?");
    tb_add(b, "OID.");
    tb_add(b, oid);
}

/*
 * Strict UTF-8 (no overlong forms, surrogates or code points past U+10FFFF),
 * the form jansson requires of JSON strings.
 */
static bool utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;

    while (i < n) {
        unsigned c = s[i], len, cp;

        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf)
            len = 2, cp = c & 0x1f;
        else if (c >= 0xe0 && c <= 0xef)
            len = 3, cp = c & 0x0f;
        else if (c >= 0xf0 && c <= 0xf4)
            len = 4, cp = c & 0x07;
        else
            return false;
        if (n - i < len)
            return false;
        for (unsigned k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10ffff ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += len;
    }
    return true;
}

/*
 * A value as .NET writes it: in double quotes (inner quotes doubled) when it
 * is empty, starts or ends with a space, or contains , + = " newline < > # ;.
 * NUL bytes become '?'. A value that does not convert to valid UTF-8 is
 * written as '#' and the hex of its content octets.
 */
static void add_value(struct tbuf *b, const ASN1_STRING *v)
{
    unsigned char *u = NULL;
    int n = ASN1_STRING_to_UTF8(&u, v);
    bool quote;

    if (n < 0 || !utf8_valid(u, (size_t)n)) {
        const unsigned char *d = ASN1_STRING_get0_data(v);
        int dl = ASN1_STRING_length(v);

        tb_add(b, "#");
        for (int i = 0; i < dl; i++) {
            char h[3];

            hex_encode(d + i, 1, h, true);
            tb_addn(b, h, 2);
        }
        OPENSSL_free(u);
        return;
    }
    quote = n == 0 || u[0] == ' ' || u[n - 1] == ' ';
    for (int i = 0; i < n && !quote; i++)
        quote = strchr(",+=\"\n<>#;", u[i]) != NULL && u[i] != '\0';
    if (quote)
        tb_add(b, "\"");
    for (int i = 0; i < n; i++) {
        if (u[i] == '"' && quote)
            tb_add(b, "\"\"");
        else if (u[i] == '\0')
            tb_add(b, "?");
        else
            tb_addn(b, (const char *)&u[i], 1);
    }
    if (quote)
        tb_add(b, "\"");
    OPENSSL_free(u);
}

/*
 * .NET form: RDNs most specific first (the reverse of the DER order, the
 * same order as RFC 2253), separated by ", "; the values of a multi-valued
 * RDN joined by " + ". Caller frees; NULL on OOM.
 */
static char *dotnet_name(const X509_NAME *name)
{
    struct tbuf b = {0};
    int n = X509_NAME_entry_count(name);
    int i = n - 1;

    while (i >= 0) {
        int set = X509_NAME_ENTRY_set(X509_NAME_get_entry(name, i));
        int first = i;

        /* the entries of one RDN are adjacent; print them in their DER order */
        while (first > 0 && X509_NAME_ENTRY_set(X509_NAME_get_entry(name, first - 1)) == set)
            first--;
        if (b.len > 0)
            tb_add(&b, ", ");
        for (int k = first; k <= i; k++) {
            const X509_NAME_ENTRY *ne = X509_NAME_get_entry(name, k);

            if (k > first)
                tb_add(&b, " + ");
            add_key(&b, X509_NAME_ENTRY_get_object(ne));
            tb_add(&b, "=");
            add_value(&b, X509_NAME_ENTRY_get_data(ne));
        }
        i = first - 1;
    }
    return tb_take(&b);
}

/* Upper-case hex of the serial's magnitude, two digits a byte, as `openssl x509 -serial`. */
static char *serial_hex(X509 *cert)
{
    const ASN1_INTEGER *s = X509_get0_serialNumber(cert);
    const unsigned char *d = ASN1_STRING_get0_data(s);
    int n = ASN1_STRING_length(s);
    struct tbuf b = {0};

    if (ASN1_STRING_type(s) == V_ASN1_NEG_INTEGER)
        tb_add(&b, "-");
    if (n <= 0)
        tb_add(&b, "00");
    for (int i = 0; i < n; i++) {
        char h[3];

        hex_encode(d + i, 1, h, true);
        tb_addn(&b, h, 2);
    }
    return tb_take(&b);
}

json_t *x509_info(X509 *cert)
{
    char sha1[41], sha256[65], nb[32], na[32];
    char *subject = NULL, *issuer = NULL, *serial = NULL;
    json_t *info = NULL;

    if (cert == NULL)
        return NULL;
    ERR_set_mark();
    x509_sha1_thumbprint(cert, sha1);
    x509_sha256_thumbprint(cert, sha256);
    format_time(X509_get0_notBefore(cert), nb, sizeof(nb));
    format_time(X509_get0_notAfter(cert), na, sizeof(na));
    if ((subject = dotnet_name(X509_get_subject_name(cert))) == NULL ||
        (issuer = dotnet_name(X509_get_issuer_name(cert))) == NULL ||
        (serial = serial_hex(cert)) == NULL)
        goto out;
    info = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I}", "subjectName", subject,
                     "sha1Thumbprint", sha1, "sha256Thumbprint", sha256, "issuerName", issuer,
                     "notBeforeUtc", nb, "notAfterUtc", na, "serialNumber", serial, "version",
                     (json_int_t)X509_get_version(cert) + 1);
out:
    free(subject);
    free(issuer);
    free(serial);
    ERR_pop_to_mark();
    return info;
}

bool x509_subject_cn(X509 *cert, char *out, size_t outlen)
{
    X509_NAME *name;
    unsigned char *u = NULL;
    int idx, n = -1;
    bool ok = false;

    if (outlen > 0)
        out[0] = '\0';
    if (cert == NULL || outlen == 0)
        return false;
    ERR_set_mark();
    name = X509_get_subject_name(cert);
    idx = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
    if (idx >= 0)
        n = ASN1_STRING_to_UTF8(&u, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, idx)));
    /* an embedded NUL would let "a\0b" pass for "a" */
    if (n >= 0 && (size_t)n < outlen && memchr(u, '\0', (size_t)n) == NULL) {
        memcpy(out, u, (size_t)n);
        out[n] = '\0';
        ok = true;
    }
    OPENSSL_free(u);
    ERR_pop_to_mark();
    return ok;
}

bool x509_same_der(const char *text, X509 *cert)
{
    const char *dummy, *b, *e;
    struct pem_block blk;
    uint8_t *der = NULL, *mine = NULL, *p;
    char *compact = NULL;
    size_t n = 0;
    int dlen, mlen;
    bool same = false;

    if (cert == NULL || !input_span(text, PROV_X509_MAX_TEXT, &b, &e, &dummy))
        return false;
    if ((size_t)(e - b) >= 5 && memcmp(b, "-----", 5) == 0) {
        /* the base64 between the BEGIN line and the END line */
        if (pem_next(b, e, &blk, &dummy) <= 0 || !label_is_cert(blk.label))
            return false;
        b = memchr(blk.begin, '\n', (size_t)(blk.end - blk.begin));
        e = memmem(blk.begin, (size_t)(blk.end - blk.begin), "-----END", 8);
        if (b == NULL || e == NULL || e < b)
            return false;
    }
    if ((compact = malloc((size_t)(e - b) + 1)) == NULL)
        return false;
    for (const char *q = b; q < e; q++) {
        if (is_b64_char(*q))
            compact[n++] = *q;
        else if (!is_space(*q))
            goto out;
    }
    compact[n] = '\0';
    mlen = i2d_X509(cert, NULL);
    if (mlen <= 0 || (size_t)mlen > b64_decoded_max(n) ||
        (der = malloc(b64_decoded_max(n) + 1)) == NULL || (mine = malloc((size_t)mlen)) == NULL)
        goto out;
    dlen = b64_decode(compact, n, der);
    p = mine;
    same = dlen == mlen && i2d_X509(cert, &p) == mlen && memcmp(der, mine, (size_t)mlen) == 0;
out:
    free(compact);
    free(der);
    free(mine);
    return same;
}

bool x509_thumbprint_matches(X509 *cert, const char *thumbprint)
{
    unsigned char want[32], have[EVP_MAX_MD_SIZE];
    unsigned int havelen = 0;
    size_t digits = 0;
    bool ok = false;

    if (cert == NULL || thumbprint == NULL)
        return false;
    for (const char *p = thumbprint; *p != '\0'; p++) {
        int v;

        if (*p == ':' || *p == ' ')
            continue;
        if ((v = hex_digit_value(*p)) < 0 || digits >= 2 * sizeof(want))
            return false;
        if (digits % 2 == 0)
            want[digits / 2] = (unsigned char)(v << 4);
        else
            want[digits / 2] |= (unsigned char)v;
        digits++;
    }
    if (digits != 40 && digits != 64)
        return false;
    ERR_set_mark();
    if (X509_digest(cert, digits == 40 ? prov_md_sha1() : prov_md_sha256(), have, &havelen) == 1 &&
        havelen == digits / 2)
        ok = CRYPTO_memcmp(want, have, havelen) == 0;
    ERR_pop_to_mark();
    return ok;
}

bool x509_is_ca(X509 *cert)
{
    uint32_t flags;

    if (cert == NULL)
        return false;
    ERR_set_mark();
    flags = X509_get_extension_flags(cert);
    ERR_pop_to_mark();
    return (flags & EXFLAG_CA) != 0 && (flags & EXFLAG_INVALID) == 0;
}

/* ---- verdicts ---------------------------------------------------------------------------- */

/* Copies s with anything but printable ASCII replaced by '?' (names go to logs). */
static void printable(const char *s, char *out, size_t outlen)
{
    size_t i = 0;

    for (; s[i] != '\0' && i + 1 < outlen; i++)
        out[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
    out[i] = '\0';
    if (s[i] != '\0' && outlen > 4)
        memcpy(out + outlen - 4, "...", 4);
}

/* "CN=dev-01", or the whole subject when there is no CN, for messages. */
static void element_name(X509 *x, char *out, size_t outlen)
{
    char cn[96];
    char *full;

    if (x509_subject_cn(x, cn, sizeof(cn))) {
        char pcn[96];

        printable(cn, pcn, sizeof(pcn));
        snprintf(out, outlen, "CN=%s", pcn);
        return;
    }
    full = dotnet_name(X509_get_subject_name(x));
    if (full == NULL || full[0] == '\0')
        snprintf(out, outlen, "no subject");
    else
        printable(full, out, outlen);
    free(full);
}

static void time_phrase(const char *what, const ASN1_TIME *t, char *out, size_t outlen)
{
    char ts[32];

    if (!format_time(t, ts, sizeof(ts)))
        snprintf(ts, sizeof(ts), "(unreadable time)");
    snprintf(out, outlen, "%s %s", what, ts);
}

/* The reason for err on certificate x, in plain words. */
static void reason(int err, X509 *x, int depth, char *out, size_t outlen)
{
    uint32_t flags = x != NULL ? X509_get_extension_flags(x) : 0;
    const char *s = NULL;

    switch (err) {
    case X509_V_ERR_CERT_HAS_EXPIRED:
        if (x != NULL) {
            time_phrase("expired at", X509_get0_notAfter(x), out, outlen);
            return;
        }
        s = "expired";
        break;
    case X509_V_ERR_CERT_NOT_YET_VALID:
        if (x != NULL) {
            time_phrase("not yet valid until", X509_get0_notBefore(x), out, outlen);
            return;
        }
        s = "not yet valid";
        break;
    case X509_V_ERR_ERROR_IN_CERT_NOT_BEFORE_FIELD:
        s = "malformed notBefore time";
        break;
    case X509_V_ERR_ERROR_IN_CERT_NOT_AFTER_FIELD:
        s = "malformed notAfter time";
        break;
    case X509_V_ERR_INVALID_CA:
    case X509_V_ERR_INVALID_NON_CA:
        s = "not a CA (basic constraints)";
        break;
    case X509_V_ERR_PATH_LENGTH_EXCEEDED:
        s = "path length exceeded (basic constraints pathlen)";
        break;
    case X509_V_ERR_CERT_SIGNATURE_FAILURE:
        s = "bad signature (not signed by its issuer's key)";
        break;
    case X509_V_ERR_UNABLE_TO_DECRYPT_CERT_SIGNATURE:
        s = "unreadable signature";
        break;
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
        s = "issuer not trusted (unknown CA)";
        break;
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
        s = "self-signed and not trusted (unknown CA)";
        break;
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
        s = "self-signed root not trusted (unknown CA)";
        break;
    case X509_V_ERR_CERT_UNTRUSTED:
    case X509_V_ERR_CERT_REJECTED:
        s = "not trusted for client authentication";
        break;
    case X509_V_ERR_INVALID_PURPOSE:
        if ((flags & EXFLAG_XKUSAGE) && !(X509_get_extended_key_usage(x) & XKU_SSL_CLIENT))
            s = "unsuitable purpose: extended key usage lacks clientAuth";
        else if (depth == 0 && (flags & EXFLAG_KUSAGE) &&
                 !(X509_get_key_usage(x) & (KU_DIGITAL_SIGNATURE | KU_KEY_AGREEMENT)))
            s = "unsuitable key usage: lacks digitalSignature";
        else
            s = "unsuitable purpose for TLS client authentication";
        break;
    case X509_V_ERR_KEYUSAGE_NO_DIGITAL_SIGNATURE:
        s = "unsuitable key usage: lacks digitalSignature";
        break;
    case X509_V_ERR_KEYUSAGE_NO_CERTSIGN:
        s = "unsuitable key usage: lacks keyCertSign, cannot sign certificates";
        break;
    case X509_V_ERR_UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY:
    case X509_V_ERR_NO_ISSUER_PUBLIC_KEY:
        s = "issuer public key unreadable";
        break;
    case X509_V_ERR_CERT_CHAIN_TOO_LONG:
        s = "chain too long";
        break;
    case X509_V_ERR_PATH_LOOP:
        s = "chain loops";
        break;
    case X509_V_ERR_UNHANDLED_CRITICAL_EXTENSION:
        s = "unsupported critical extension";
        break;
    case X509_V_ERR_INVALID_EXTENSION:
        s = "invalid or inconsistent extension";
        break;
    case X509_V_ERR_EE_KEY_TOO_SMALL:
    case X509_V_ERR_CA_KEY_TOO_SMALL:
        s = "key too small";
        break;
    case X509_V_ERR_CA_MD_TOO_WEAK:
        s = "signature digest too weak";
        break;
    case X509_V_ERR_PATHLEN_INVALID_FOR_NON_CA:
        s = "path length set on a non-CA certificate";
        break;
    case X509_V_ERR_PATHLEN_WITHOUT_KU_KEY_CERT_SIGN:
        s = "path length set without keyCertSign key usage";
        break;
    case X509_V_ERR_KU_KEY_CERT_SIGN_INVALID_FOR_NON_CA:
        s = "keyCertSign key usage on a non-CA certificate";
        break;
    case X509_V_ERR_ISSUER_NAME_EMPTY:
        s = "empty issuer name";
        break;
    case X509_V_ERR_SUBJECT_NAME_EMPTY:
        s = "empty subject name";
        break;
    case X509_V_ERR_MISSING_AUTHORITY_KEY_IDENTIFIER:
        s = "no authority key identifier extension";
        break;
    case X509_V_ERR_MISSING_SUBJECT_KEY_IDENTIFIER:
        s = "CA certificate without subject key identifier extension";
        break;
    case X509_V_ERR_CA_BCONS_NOT_CRITICAL:
        s = "CA basic constraints not marked critical";
        break;
    case X509_V_ERR_CA_CERT_MISSING_KEY_USAGE:
        s = "CA certificate without key usage extension";
        break;
    case X509_V_ERR_EXTENSIONS_REQUIRE_VERSION_3:
        s = "extensions in a certificate older than version 3";
        break;
    case X509_V_ERR_EC_KEY_EXPLICIT_PARAMS:
        s = "EC key with explicit curve parameters";
        break;
    case X509_V_ERR_UNSUPPORTED_SIGNATURE_ALGORITHM:
        s = "unsupported signature algorithm";
        break;
    case X509_V_ERR_SIGNATURE_ALGORITHM_MISMATCH:
    case X509_V_ERR_SIGNATURE_ALGORITHM_INCONSISTENCY:
        s = "signature algorithm does not match the issuer's key";
        break;
    case X509_V_ERR_OUT_OF_MEM:
        s = "out of memory during verification";
        break;
    default:
        s = X509_verify_cert_error_string(err);
        break;
    }
    snprintf(out, outlen, "%s", s);
}

/* "certificate N (CN=...): reason" into v->message. */
static void fill_message(struct x509_verdict *v, X509 *x, const char *why)
{
    char name[112];
    int n;

    if (v->depth < 0) {
        snprintf(v->message, sizeof(v->message), "%s", why);
        return;
    }
    if (x == NULL) {
        snprintf(v->message, sizeof(v->message), "certificate %d: %s", v->depth, why);
        return;
    }
    element_name(x, name, sizeof(name));
    n = snprintf(v->message, sizeof(v->message), "certificate %d (%s): %s", v->depth, name, why);
    if (n < 0 || (size_t)n >= sizeof(v->message))
        memcpy(v->message + sizeof(v->message) - 4, "...", 4);
}

static void verdict_fail(struct x509_verdict *v, int depth, int err, X509 *x)
{
    char why[160];

    v->depth = depth;
    v->error = err;
    v->anchor_depth = -1;
    reason(err, x, depth, why, sizeof(why));
    fill_message(v, x, why);
}

static void verdict_clear(struct x509_verdict *v)
{
    v->depth = -1;
    v->error = X509_V_OK;
    v->message[0] = '\0';
    v->anchor_depth = -1;
}

int x509_verify_chain_ex(X509 *leaf, STACK_OF(X509) *untrusted, STACK_OF(X509) *anchors,
                         time_t now, struct x509_verdict *v, STACK_OF(X509) **chain_out)
{
    struct x509_verdict dummy;
    X509_STORE *store = NULL;
    X509_STORE_CTX *ctx = NULL;
    X509_VERIFY_PARAM *param;
    STACK_OF(X509) *chain;
    char name[112];
    int r = PROV_EINTERNAL;

    if (v == NULL)
        v = &dummy;
    verdict_clear(v);
    if (chain_out != NULL)
        *chain_out = NULL;
    if (leaf == NULL) {
        snprintf(v->message, sizeof(v->message), "no certificate to verify");
        return PROV_EINVAL;
    }
    ERR_set_mark();
    if ((store = X509_STORE_new()) == NULL || (ctx = X509_STORE_CTX_new()) == NULL) {
        r = PROV_ENOMEM;
        goto internal;
    }
    for (int i = 0; anchors != NULL && i < sk_X509_num(anchors); i++) {
        if (X509_STORE_add_cert(store, sk_X509_value(anchors, i)) != 1)
            goto internal;
    }
    if (X509_STORE_CTX_init(ctx, store, leaf, untrusted) != 1)
        goto internal;
    param = X509_STORE_CTX_get0_param(ctx);
    /*
     * Not X509_V_FLAG_X509_STRICT: it refuses CAs without keyUsage or subject
     * key identifier and leaves without authority key identifier, which is
     * what `openssl req -x509` with Debian's defaults and many device
     * factories produce. Basic constraints, path length, validity, signatures
     * and (through the purpose) key usage and EKU when present are enforced.
     */
    if (X509_VERIFY_PARAM_set_flags(param, X509_V_FLAG_PARTIAL_CHAIN) != 1 ||
        X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_CLIENT) != 1)
        goto internal;
    X509_VERIFY_PARAM_set_depth(param, PROV_X509_MAX_DEPTH);
    if (now != 0)
        X509_VERIFY_PARAM_set_time(param, now);
    if (X509_verify_cert(ctx) != 1) {
        int err = X509_STORE_CTX_get_error(ctx);

        if (err == X509_V_OK)
            err = X509_V_ERR_UNSPECIFIED;
        verdict_fail(v, X509_STORE_CTX_get_error_depth(ctx), err,
                     X509_STORE_CTX_get_current_cert(ctx));
        r = err == X509_V_ERR_OUT_OF_MEM ? PROV_ENOMEM : PROV_EAUTH;
        goto out;
    }
    chain = X509_STORE_CTX_get0_chain(ctx);
    v->anchor_depth = sk_X509_num(chain) - 1;
    element_name(sk_X509_value(chain, v->anchor_depth), name, sizeof(name));
    snprintf(v->message, sizeof(v->message), "verified up to certificate %d (%s)",
             v->anchor_depth, name);
    if (chain_out != NULL && (*chain_out = X509_STORE_CTX_get1_chain(ctx)) == NULL) {
        r = PROV_ENOMEM;
        goto internal;
    }
    r = 0;
    goto out;
internal:
    v->depth = -1;
    v->error = X509_V_ERR_UNSPECIFIED;
    v->anchor_depth = -1;
    snprintf(v->message, sizeof(v->message), "certificate verification failed: %s",
             prov_strerror(r));
out:
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
    ERR_pop_to_mark();
    return r;
}

int x509_verify_chain(X509 *leaf, STACK_OF(X509) *untrusted, STACK_OF(X509) *anchors,
                      time_t now, struct x509_verdict *v)
{
    return x509_verify_chain_ex(leaf, untrusted, anchors, now, v, NULL);
}

/* X509_V_OK, X509_V_ERR_CERT_NOT_YET_VALID, X509_V_ERR_CERT_HAS_EXPIRED or a field error. */
static int validity_error(X509 *cert, time_t now)
{
    int c;

    if (now == 0)
        now = time(NULL);
    /* the same comparisons X509_verify_cert makes */
    if ((c = X509_cmp_time(X509_get0_notBefore(cert), &now)) == 0)
        return X509_V_ERR_ERROR_IN_CERT_NOT_BEFORE_FIELD;
    if (c > 0)
        return X509_V_ERR_CERT_NOT_YET_VALID;
    if ((c = X509_cmp_time(X509_get0_notAfter(cert), &now)) == 0)
        return X509_V_ERR_ERROR_IN_CERT_NOT_AFTER_FIELD;
    if (c < 0)
        return X509_V_ERR_CERT_HAS_EXPIRED;
    return X509_V_OK;
}

int x509_check_validity(X509 *cert, time_t now, struct x509_verdict *v)
{
    struct x509_verdict dummy;
    int err;

    if (v == NULL)
        v = &dummy;
    verdict_clear(v);
    if (cert == NULL) {
        snprintf(v->message, sizeof(v->message), "no certificate to check");
        return PROV_EINVAL;
    }
    ERR_set_mark();
    err = validity_error(cert, now);
    if (err != X509_V_OK)
        verdict_fail(v, 0, err, cert);
    else
        v->anchor_depth = 0;
    ERR_pop_to_mark();
    return err == X509_V_OK ? 0 : PROV_EAUTH;
}

int x509_verify_pop(X509 *ca, X509 *proof, const char *code, time_t now, const char **why)
{
    const char *dummy;
    char cn[256];
    EVP_PKEY *key;
    int r = PROV_EAUTH, err;

    if (why == NULL)
        why = &dummy;
    *why = NULL;
    if (ca == NULL || proof == NULL || code == NULL || code[0] == '\0') {
        *why = "missing CA certificate, verification certificate or verification code";
        return PROV_EINVAL;
    }
    ERR_set_mark();
    if (!x509_subject_cn(proof, cn, sizeof(cn))) {
        *why = "the verification certificate has no usable subject CN";
        goto out;
    }
    if (strcmp(cn, code) != 0) {
        *why = "the verification certificate's subject CN is not the verification code";
        goto out;
    }
    if (X509_NAME_cmp(X509_get_issuer_name(proof), X509_get_subject_name(ca)) != 0) {
        *why = "the verification certificate's issuer is not the CA certificate's subject";
        goto out;
    }
    if ((key = X509_get0_pubkey(ca)) == NULL) {
        *why = "the CA certificate's public key is unreadable";
        goto out;
    }
    if (X509_verify(proof, key) != 1) {
        *why = "the verification certificate is not signed by the CA certificate's key";
        goto out;
    }
    err = validity_error(proof, now);
    if (err == X509_V_ERR_CERT_NOT_YET_VALID) {
        *why = "the verification certificate is not yet valid";
        goto out;
    }
    if (err == X509_V_ERR_CERT_HAS_EXPIRED) {
        *why = "the verification certificate has expired";
        goto out;
    }
    if (err != X509_V_OK) {
        *why = "the verification certificate has a malformed validity period";
        goto out;
    }
    r = 0;
out:
    ERR_pop_to_mark();
    return r;
}
