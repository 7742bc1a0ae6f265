/*
 * The server secret of TPM attestation: made once per data directory, read by
 * every worker and every start, never logged; and the two keys derived from
 * it (tpm_secret.h).
 */
#include "tpm_secret.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "../common/errors.h"
#include "../common/limits.h"
#include "../common/log.h"

#define LOG_MODULE "tpm"

#define PATH_MAX_LEN 1100

static pthread_mutex_t secret_lock = PTHREAD_MUTEX_INITIALIZER;
static bool secret_loaded;
static char secret_dir[PATH_MAX_LEN];
static uint8_t secret_bytes[TPM_SECRET_SIZE];

/* Reads exactly TPM_SECRET_SIZE bytes from path. PROV_ENOTFOUND when it does not exist. */
static int read_secret(const char *path, uint8_t out[TPM_SECRET_SIZE], char *err, size_t errlen)
{
    struct stat sb;
    size_t got = 0;
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);

    if (fd < 0) {
        if (errno == ENOENT)
            return PROV_ENOTFOUND;
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return PROV_EIO;
    }
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size != TPM_SECRET_SIZE) {
        snprintf(err, errlen,
                 "%s: not a %d-byte file (corrupt? removing it invalidates the hub keys of "
                 "TPM devices until they register again)",
                 path, TPM_SECRET_SIZE);
        close(fd);
        return PROV_EIO;
    }
    if ((sb.st_mode & 077) != 0)
        plog(LOG_WARN, "%s is readable by other users (mode %03o); it should be 0600", path,
             (unsigned)(sb.st_mode & 0777));
    while (got < TPM_SECRET_SIZE) {
        ssize_t n = read(fd, out + got, TPM_SECRET_SIZE - got);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            snprintf(err, errlen, "%s: short read", path);
            close(fd);
            prov_cleanse(out, TPM_SECRET_SIZE);
            return PROV_EIO;
        }
        got += (size_t)n;
    }
    close(fd);
    return 0;
}

static int write_all(int fd, const uint8_t *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return PROV_EIO;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/*
 * Makes the secret file: a temporary file (O_EXCL, 0600) with the bytes,
 * synced, then link()ed to its name; whoever links first wins and the others
 * read the winner's file.
 */
static int create_secret(const char *dir, const char *path, char *err, size_t errlen)
{
    char tmp[PATH_MAX_LEN + 32];
    uint8_t fresh[TPM_SECRET_SIZE], tag[4];
    char tag_hex[9];
    int fd, r = 0;

    if (random_bytes(fresh, sizeof(fresh)) != 0 || random_bytes(tag, sizeof(tag)) != 0) {
        snprintf(err, errlen, "no randomness for the TPM secret");
        return PROV_ECRYPTO;
    }
    hex_encode(tag, sizeof(tag), tag_hex, false);
    snprintf(tmp, sizeof(tmp), "%s.tmp.%ld.%s", path, (long)getpid(), tag_hex);
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
        prov_cleanse(fresh, sizeof(fresh));
        return PROV_EIO;
    }
    if (write_all(fd, fresh, sizeof(fresh)) != 0 || fsync(fd) != 0) {
        snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
        r = PROV_EIO;
    }
    prov_cleanse(fresh, sizeof(fresh));
    close(fd);
    if (r == 0 && link(tmp, path) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        r = PROV_EIO;
    }
    unlink(tmp);
    if (r == 0) {
        int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

        if (dfd >= 0) {
            (void)fsync(dfd);
            close(dfd);
        }
    }
    return r;
}

static int load(const char *data_dir, uint8_t out[TPM_SECRET_SIZE], char *err, size_t errlen)
{
    char path[PATH_MAX_LEN];
    int r;

    if (data_dir == NULL || data_dir[0] == '\0') {
        snprintf(err, errlen, "no data directory for the TPM secret");
        return PROV_EINVAL;
    }
    if ((size_t)snprintf(path, sizeof(path), "%s/%s", data_dir, TPM_SECRET_FILE) >= sizeof(path)) {
        snprintf(err, errlen, "--data-dir: path too long");
        return PROV_EINVAL;
    }
    if (mkdir(data_dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "%s: %s", data_dir, strerror(errno));
        return PROV_EIO;
    }
    r = read_secret(path, out, err, errlen);
    if (r != PROV_ENOTFOUND)
        return r;
    if ((r = create_secret(data_dir, path, err, errlen)) != 0)
        return r;
    plog(LOG_INFO, "created the TPM attestation secret %s", path);
    r = read_secret(path, out, err, errlen);
    return r == PROV_ENOTFOUND ? PROV_EIO : r;
}

/* With secret_lock held. */
static int load_cached(const char *data_dir, char *err, size_t errlen)
{
    int r;

    if (secret_loaded && strcmp(secret_dir, data_dir != NULL ? data_dir : "") == 0)
        return 0;
    secret_loaded = false;
    r = load(data_dir, secret_bytes, err, errlen);
    if (r != 0) {
        prov_cleanse(secret_bytes, sizeof(secret_bytes));
        return r;
    }
    snprintf(secret_dir, sizeof(secret_dir), "%s", data_dir);
    secret_loaded = true;
    return 0;
}

int tpm_secret_init(const char *data_dir, char *err, size_t errlen)
{
    int r;

    pthread_mutex_lock(&secret_lock);
    r = load_cached(data_dir, err, errlen);
    pthread_mutex_unlock(&secret_lock);
    return r;
}

int tpm_secret_get(const char *data_dir, uint8_t out[TPM_SECRET_SIZE])
{
    char err[PATH_MAX_LEN + 128] = "";
    int r;

    pthread_mutex_lock(&secret_lock);
    r = load_cached(data_dir, err, sizeof(err));
    if (r == 0)
        memcpy(out, secret_bytes, TPM_SECRET_SIZE);
    pthread_mutex_unlock(&secret_lock);
    if (r != 0)
        plog(LOG_ERROR, "TPM secret: %s", err);
    return r;
}

void tpm_secret_forget(void)
{
    pthread_mutex_lock(&secret_lock);
    prov_cleanse(secret_bytes, sizeof(secret_bytes));
    secret_loaded = false;
    secret_dir[0] = '\0';
    pthread_mutex_unlock(&secret_lock);
}

static int hmac_sha256(const uint8_t *key, size_t key_len, const uint8_t *msg, size_t msg_len,
                       uint8_t out[TPM_DERIVED_KEY_SIZE])
{
    size_t outlen = 0;

    if (EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, key, key_len, msg, msg_len, out,
                  TPM_DERIVED_KEY_SIZE, &outlen) == NULL ||
        outlen != TPM_DERIVED_KEY_SIZE) {
        prov_cleanse(out, TPM_DERIVED_KEY_SIZE);
        return PROV_ECRYPTO;
    }
    return 0;
}

/* Appends s lowercased and its NUL; false when it does not fit. */
static bool put_lower(uint8_t *buf, size_t cap, size_t *off, const char *s)
{
    size_t len = strlen(s);

    if (*off + len + 1 > cap)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];

        buf[*off + i] = (uint8_t)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    }
    buf[*off + len] = 0;
    *off += len + 1;
    return true;
}

int tpm_challenge_key(const uint8_t secret[TPM_SECRET_SIZE], const char *scope,
                      const char *registration_id, const char *ek_id, uint64_t bucket,
                      uint8_t out[TPM_DERIVED_KEY_SIZE])
{
    uint8_t msg[sizeof(TPM_CHALLENGE_LABEL) + 8 + PROV_MAX_SCOPE + PROV_MAX_REG_ID + 64 + 3];
    size_t off = 0;

    if (secret == NULL || scope == NULL || registration_id == NULL || ek_id == NULL || out == NULL)
        return PROV_EINVAL;
    if (!put_lower(msg, sizeof(msg), &off, TPM_CHALLENGE_LABEL))
        return PROV_EINVAL;
    for (int i = 7; i >= 0; i--)
        msg[off++] = (uint8_t)(bucket >> (8 * i));
    if (!put_lower(msg, sizeof(msg), &off, scope) ||
        !put_lower(msg, sizeof(msg), &off, registration_id) ||
        !put_lower(msg, sizeof(msg), &off, ek_id))
        return PROV_EINVAL;
    off--; /* ek_id is last: no separator after it */
    return hmac_sha256(secret, TPM_SECRET_SIZE, msg, off, out);
}

int tpm_hub_key(const uint8_t secret[TPM_SECRET_SIZE], const char *ek_id,
                uint8_t out[TPM_DERIVED_KEY_SIZE])
{
    uint8_t msg[sizeof(TPM_HUB_KEY_LABEL) + 64];
    size_t off = 0;

    if (secret == NULL || ek_id == NULL || out == NULL)
        return PROV_EINVAL;
    if (!put_lower(msg, sizeof(msg), &off, TPM_HUB_KEY_LABEL) ||
        !put_lower(msg, sizeof(msg), &off, ek_id))
        return PROV_EINVAL;
    return hmac_sha256(secret, TPM_SECRET_SIZE, msg, off - 1, out);
}
