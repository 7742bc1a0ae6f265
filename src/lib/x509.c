/*
 * X.509 credentials (device protocol §4.3): checks the certificate and key
 * files when they are set, so that a wrong file is reported with a clear
 * reason before any network traffic. libcurl reads the same files again for
 * the TLS handshake (CURLOPT_SSLCERT, CURLOPT_SSLKEY).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "../common/util.h"
#include "lib.h"

/* Text of the most recent OpenSSL error; empties the thread's error queue. */
static const char *ssl_reason(char *buf, size_t len)
{
    unsigned long e = ERR_peek_last_error();
    const char *why = e != 0 ? ERR_reason_error_string(e) : NULL;

    snprintf(buf, len, "%s", why != NULL ? why : "unknown error");
    /* libcurl reads this queue after its own TLS calls: leave nothing behind */
    ERR_clear_error();
    return buf;
}

/*
 * Reads a whole regular file of at most PROV_MAX_PEM_FILE bytes into a new
 * NUL-terminated buffer of *cap bytes (caller wipes and frees it with
 * prov_freezero(*out, *cap)). 0, PROV_EINVAL (logged) or PROV_ENOMEM.
 */
static int read_pem_file(const char *what, const char *path, char **out, size_t *len,
                         size_t *cap)
{
    struct stat st;
    char *buf = NULL;
    size_t n = 0, size;
    int fd = -1, r = PROV_EINTERNAL;

    *out = NULL;
    *len = *cap = 0;
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0 || fstat(fd, &st) != 0) {
        lib_log(PROV_LOG_ERROR, "cannot read %s '%s': %s", what, path, strerror(errno));
        r = PROV_EINVAL;
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        lib_log(PROV_LOG_ERROR, "cannot read %s '%s': not a regular file", what, path);
        r = PROV_EINVAL;
        goto out;
    }
    if (st.st_size > PROV_MAX_PEM_FILE) {
        lib_log(PROV_LOG_ERROR, "%s '%s' too large: over %d bytes", what, path,
                PROV_MAX_PEM_FILE);
        r = PROV_EINVAL;
        goto out;
    }
    size = (size_t)st.st_size + 1;
    if ((buf = malloc(size)) == NULL) {
        r = PROV_ENOMEM;
        goto out;
    }
    for (;;) {
        ssize_t got = read(fd, buf + n, size - n);

        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            lib_log(PROV_LOG_ERROR, "cannot read %s '%s': %s", what, path, strerror(errno));
            r = PROV_EINVAL;
            goto out;
        }
        if (got == 0)
            break;
        n += (size_t)got;
        if (n == size) {
            /* the file grew since fstat */
            lib_log(PROV_LOG_ERROR, "cannot read %s '%s': it changes while being read", what,
                    path);
            r = PROV_EINVAL;
            goto out;
        }
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    *cap = size;
    buf = NULL; /* transferred */
    r = 0;
out:
    if (buf != NULL)
        prov_freezero(buf, size);
    if (fd >= 0)
        close(fd);
    return r;
}

/*
 * Every certificate in the PEM text, in order; the first one is the leaf.
 * Blocks of other types (a key, say) are skipped, as the TLS library does.
 */
static int read_certs(const char *path, const char *text, size_t len, X509 **leaf_out,
                      int *count)
{
    char why[160];
    X509 *leaf = NULL;
    BIO *bio;
    int n = 0, r = PROV_EINTERNAL;

    *leaf_out = NULL;
    *count = 0;
    if ((bio = BIO_new_mem_buf(text, (int)len)) == NULL)
        return PROV_ENOMEM;
    for (;;) {
        X509 *x = PEM_read_bio_X509(bio, NULL, NULL, NULL);

        if (x == NULL) {
            unsigned long e = ERR_peek_last_error();
            bool no_more = ERR_GET_LIB(e) == ERR_LIB_PEM &&
                           ERR_GET_REASON(e) == PEM_R_NO_START_LINE;

            if (n > 0 && no_more) {
                ERR_clear_error(); /* the normal end of the file */
                break;
            }
            if (n == 0 && no_more)
                lib_log(PROV_LOG_ERROR, "no PEM certificate in '%s'", path);
            else if (n == 0)
                lib_log(PROV_LOG_ERROR, "the first certificate in '%s' is invalid: %s", path,
                        ssl_reason(why, sizeof(why)));
            else
                lib_log(PROV_LOG_ERROR, "certificate %d in '%s' is invalid: %s", n + 1, path,
                        ssl_reason(why, sizeof(why)));
            r = PROV_EINVAL;
            goto out;
        }
        if (n == 0)
            leaf = x;
        else
            X509_free(x);
        n++;
    }
    *leaf_out = leaf;
    leaf = NULL; /* transferred */
    *count = n;
    r = 0;
out:
    X509_free(leaf);
    BIO_free(bio);
    return r;
}

/* Passphrase callback: encrypted keys are not supported; notes that one was asked for. */
static int no_passphrase(char *buf, int size, int rwflag, void *arg)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    *(int *)arg = 1;
    return -1;
}

static int read_key(const char *path, const char *text, size_t len, EVP_PKEY **out)
{
    int encrypted = 0;
    BIO *bio;

    *out = NULL;
    if ((bio = BIO_new_mem_buf(text, (int)len)) == NULL)
        return PROV_ENOMEM;
    *out = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, &encrypted);
    BIO_free(bio);
    /* OpenSSL's reason ("unsupported", "no start line") would not help here */
    ERR_clear_error();
    if (*out != NULL)
        return 0;
    if (encrypted)
        lib_log(PROV_LOG_ERROR, "private key in '%s' is encrypted: only unencrypted keys are "
                                "supported", path);
    else
        lib_log(PROV_LOG_ERROR, "no usable PEM private key in '%s'", path);
    return PROV_EINVAL;
}

/* A copy of s for a log line: printable ASCII only, at most 64 characters. */
static void printable(const char *s, char *out, size_t outlen)
{
    size_t i;

    for (i = 0; s[i] != '\0' && i + 1 < outlen && i < 64; i++)
        out[i] = s[i] > 0x20 && s[i] < 0x7f ? s[i] : '?';
    out[i] = '\0';
}

/* The first subject CN as UTF-8, if it is a valid registration id. */
static int leaf_cn(const char *path, X509 *leaf, char **out)
{
    const X509_NAME *subj = X509_get_subject_name(leaf);
    const ASN1_STRING *data;
    unsigned char *utf8 = NULL;
    char shown[80];
    int idx, n, r = PROV_EINTERNAL;

    *out = NULL;
    idx = X509_NAME_get_index_by_NID(subj, NID_commonName, -1);
    if (idx < 0) {
        lib_log(PROV_LOG_ERROR, "the certificate in '%s' has no subject CN: an X.509 device's "
                                "registration id is its CN", path);
        return PROV_EINVAL;
    }
    data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, idx));
    if ((n = ASN1_STRING_to_UTF8(&utf8, data)) < 0) {
        ERR_clear_error();
        lib_log(PROV_LOG_ERROR, "the subject CN of the certificate in '%s' is unreadable",
                path);
        return PROV_EINVAL;
    }
    if (strlen((const char *)utf8) != (size_t)n || !id_is_valid((const char *)utf8)) {
        printable((const char *)utf8, shown, sizeof(shown));
        lib_log(PROV_LOG_ERROR,
                "the subject CN '%s' of the certificate in '%s' is not a valid registration id: "
                "1-128 of A-Z a-z 0-9 - . _ :, ending with a letter, digit or '-'",
                shown, path);
        r = PROV_EINVAL;
        goto out;
    }
    if ((*out = strdup((const char *)utf8)) == NULL) {
        r = PROV_ENOMEM;
        goto out;
    }
    r = 0;
out:
    OPENSSL_free(utf8);
    return r;
}

/* Expired or not yet valid: the service decides, but the reason is worth a warning. */
static void warn_validity(const char *path, X509 *leaf)
{
    if (X509_cmp_current_time(X509_get0_notAfter(leaf)) < 0)
        lib_log(PROV_LOG_WARN, "the certificate in '%s' has expired", path);
    else if (X509_cmp_current_time(X509_get0_notBefore(leaf)) > 0)
        lib_log(PROV_LOG_WARN, "the certificate in '%s' is not valid yet", path);
    ERR_clear_error();
}

int lib_x509_load(const char *cert_file, const char *key_file, char **cn_out, int *chain_len)
{
    char *cert_text = NULL, *key_text = NULL, *cn = NULL;
    size_t cert_len, cert_cap = 0, key_len, key_cap = 0;
    X509 *leaf = NULL;
    EVP_PKEY *pkey = NULL;
    int count = 0, r = PROV_EINTERNAL;

    *cn_out = NULL;
    *chain_len = 0;
    if ((r = read_pem_file("certificate file", cert_file, &cert_text, &cert_len,
                           &cert_cap)) != 0 ||
        (r = read_certs(cert_file, cert_text, cert_len, &leaf, &count)) != 0)
        goto out;
    if ((r = read_pem_file("key file", key_file, &key_text, &key_len, &key_cap)) != 0 ||
        (r = read_key(key_file, key_text, key_len, &pkey)) != 0)
        goto out;
    if (X509_check_private_key(leaf, pkey) != 1) {
        ERR_clear_error();
        lib_log(PROV_LOG_ERROR, "the private key in '%s' does not match the certificate in "
                                "'%s'", key_file, cert_file);
        r = PROV_EINVAL;
        goto out;
    }
    if ((r = leaf_cn(cert_file, leaf, &cn)) != 0)
        goto out;
    warn_validity(cert_file, leaf);
    *cn_out = cn;
    cn = NULL; /* transferred */
    *chain_len = count;
    r = 0;
out:
    ERR_clear_error();
    free(cn);
    X509_free(leaf);
    EVP_PKEY_free(pkey);
    if (cert_text != NULL)
        prov_freezero(cert_text, cert_cap);
    if (key_text != NULL)
        prov_freezero(key_text, key_cap);
    return r;
}
