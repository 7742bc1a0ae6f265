/*
 * The SQLite store against the contract of src/store/store.h, on a real
 * database file in a fresh temporary directory per test. The file is also
 * read directly with SQLite to check what the store wrote (or did not).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "src/common/errors.h"
#include "src/common/log.h"
#include "src/store/store.h"

#define SCOPE "0ne00000001"
#define SCOPE2 "0ne00000002"
#define SCHEMA 2 /* the schema version store_sqlite.c migrates to */

struct fixture {
    char dir[64];
    char path[128];
    struct store *st;
};

static void remove_db(const char *path)
{
    char p[200];

    unlink(path);
    snprintf(p, sizeof(p), "%s-wal", path);
    unlink(p);
    snprintf(p, sizeof(p), "%s-shm", path);
    unlink(p);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    char err[256];

    if (f == NULL)
        return -1;
    snprintf(f->dir, sizeof(f->dir), "/tmp/provd-store-XXXXXX");
    if (mkdtemp(f->dir) == NULL) {
        free(f);
        return -1;
    }
    snprintf(f->path, sizeof(f->path), "%s/provd.db", f->dir);
    if (store_sqlite_open(f->path, &f->st, err, sizeof(err)) != 0) {
        fprintf(stderr, "open: %s\n", err);
        rmdir(f->dir);
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    DIR *d;
    struct dirent *e;

    store_close(f->st);
    /* whatever a failed test left behind */
    if ((d = opendir(f->dir)) != NULL) {
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
                unlinkat(dirfd(d), e->d_name, 0);
        }
        closedir(d);
    }
    rmdir(f->dir);
    free(f);
    return 0;
}

/* One integer from a query run on a separate connection to path. */
static long long db_int(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    long long v = -1;

    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
    if (sqlite3_step(s) == SQLITE_ROW)
        v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return v;
}

static void db_exec(const char *path, const char *sql)
{
    sqlite3 *db = NULL;

    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

static int put(struct store *st, const char *scope, enum store_kind kind, const char *id,
               const char *etag, const char *att, const char *json, const char *created,
               const char *updated, enum store_put_mode mode, const char *if_match)
{
    struct store_doc d = {
        .id = (char *)id,
        .etag = (char *)etag,
        .json = (char *)json,
        .attestation = (char *)att,
        .created = (char *)created,
        .updated = (char *)updated,
    };

    return st->ops->enrollment_put(st, scope, kind, &d, mode, if_match);
}

/* An individual enrollment with fixed times. */
static int put_simple(struct store *st, const char *id, const char *etag,
                      enum store_put_mode mode, const char *if_match)
{
    return put(st, SCOPE, STORE_ENROLLMENT, id, etag, "symmetricKey", "{\"k\":1}",
               "2026-01-01T00:00:00.000Z", "2026-01-02T00:00:00.000Z", mode, if_match);
}

static void expect_etag(struct store *st, enum store_kind kind, const char *id, const char *etag)
{
    struct store_doc d;

    assert_int_equal(st->ops->enrollment_get(st, SCOPE, kind, id, &d), 0);
    assert_string_equal(d.etag, etag);
    store_doc_release(&d);
}

static int commit(struct store *st, const char *scope, const char *id, const char *group,
                  const char *etag, const char *json, const char *created, const char *updated,
                  const char *op_id, long long expires)
{
    struct store_doc reg = {
        .id = (char *)id,
        .etag = (char *)etag,
        .json = (char *)json,
        .created = (char *)created,
        .updated = (char *)updated,
        .group_id = (char *)group,
    };
    struct store_doc op = {.id = (char *)op_id, .json = (char *)"{\"status\":\"assigned\"}"};

    return st->ops->registration_commit(st, scope, &reg, &op, expires);
}

/* Listing callback state. */
struct collect {
    struct store *st;
    int n;
    int stop_after;     /* 0 = never stop */
    bool fields_ok;
    bool reentry_ok;
    char ids[64][32];
    char extra[64][32]; /* attestation or group_id */
};

static int collect_cb(void *arg, const struct store_doc *doc)
{
    struct collect *c = arg;

    if (c->n >= 64)
        return 1;
    if (doc->id == NULL || doc->etag == NULL || doc->json == NULL || doc->created == NULL ||
        doc->updated == NULL)
        c->fields_ok = false;
    snprintf(c->ids[c->n], sizeof(c->ids[0]), "%s", doc->id != NULL ? doc->id : "");
    snprintf(c->extra[c->n], sizeof(c->extra[0]), "%s",
             doc->attestation != NULL ? doc->attestation
                                      : (doc->group_id != NULL ? doc->group_id : ""));
    if (c->st != NULL && doc->attestation != NULL) {
        /* the callback may use the same store */
        struct store_doc d;

        if (c->st->ops->enrollment_get(c->st, SCOPE, STORE_ENROLLMENT, doc->id, &d) != 0 ||
            d.etag == NULL || doc->etag == NULL || strcmp(d.etag, doc->etag) != 0)
            c->reentry_ok = false;
        store_doc_release(&d);
    }
    c->n++;
    return c->stop_after > 0 && c->n >= c->stop_after;
}

static void collect_init(struct collect *c)
{
    memset(c, 0, sizeof(*c));
    c->fields_ok = true;
    c->reentry_ok = true;
}

/* ---- opening and migrations ---- */

/* An X.509 document with one certificate entry (sha256 and optional sha1 thumbprints). */
static void x509_doc(char *out, size_t len, const char *slot_list, const char *sha256,
                     const char *sha1)
{
    char sha1_member[96] = "";

    if (sha1 != NULL)
        snprintf(sha1_member, sizeof(sha1_member), ",\"sha1Thumbprint\":\"%s\"", sha1);
    snprintf(out, len,
             "{\"attestation\":{\"type\":\"x509\",\"x509\":{\"%s\":{\"primary\":"
             "{\"info\":{\"sha256Thumbprint\":\"%s\"%s}}}}}}",
             slot_list, sha256, sha1_member);
}

struct found {
    int n;
    char ids[8][32];
};

static int found_one(void *arg, const struct store_doc *d)
{
    struct found *fd = arg;

    if (fd->n < 8)
        snprintf(fd->ids[fd->n], sizeof(fd->ids[0]), "%s", d->id);
    fd->n++;
    return 0;
}

static struct found find(struct store *st, const char *scope, enum store_kind kind, const char *tp)
{
    struct found fd = {0};
    const char *tps[1] = {tp};

    assert_int_equal(st->ops->enrollment_x509_find(st, scope, kind, tps, 1, found_one, &fd), 0);
    return fd;
}

#define TP_A "AAAA000000000000000000000000000000000000000000000000000000000001"
#define TP_B "BBBB000000000000000000000000000000000000000000000000000000000002"
#define TP_A1 "A1A1000000000000000000000000000000000001"

/* The thumbprint index follows every insert, replace and delete, per scope and kind. */
static void test_x509_find(void **state)
{
    struct fixture *f = *state;
    char doc[512];
    struct found fd;
    const char *ts = "2026-01-01T00:00:00.000Z";

    x509_doc(doc, sizeof(doc), "clientCertificates", TP_A, TP_A1);
    assert_int_equal(put(f->st, SCOPE, STORE_ENROLLMENT, "Dev-A", "e1", "x509", doc, ts, ts,
                         STORE_PUT_CREATE, NULL), 0);
    x509_doc(doc, sizeof(doc), "signingCertificates", TP_A, NULL);
    assert_int_equal(put(f->st, SCOPE, STORE_GROUP, "grp-a", "e1", "x509", doc, ts, ts,
                         STORE_PUT_CREATE, NULL), 0);
    /* a thumbprint-shaped member of another attestation type is not indexed */
    assert_int_equal(put(f->st, SCOPE, STORE_ENROLLMENT, "sym", "e1", "symmetricKey",
                         "{\"attestation\":{\"x509\":{\"sha256Thumbprint\":\"" TP_B "\"}}}",
                         ts, ts, STORE_PUT_CREATE, NULL), 0);
    /* a document that is not JSON is stored and not indexed (the trigger does not fail) */
    assert_int_equal(put(f->st, SCOPE, STORE_ENROLLMENT, "broken", "e1", "x509", "not json",
                         ts, ts, STORE_PUT_CREATE, NULL), 0);

    fd = find(f->st, SCOPE, STORE_ENROLLMENT, TP_A);
    assert_int_equal(fd.n, 1);
    assert_string_equal(fd.ids[0], "Dev-A");
    fd = find(f->st, SCOPE, STORE_ENROLLMENT, "a1a1000000000000000000000000000000000001");
    assert_int_equal(fd.n, 1); /* by SHA-1, in any case */
    fd = find(f->st, SCOPE, STORE_GROUP, TP_A);
    assert_int_equal(fd.n, 1);
    assert_string_equal(fd.ids[0], "grp-a");
    assert_int_equal(find(f->st, SCOPE2, STORE_ENROLLMENT, TP_A).n, 0);
    assert_int_equal(find(f->st, SCOPE, STORE_ENROLLMENT, TP_B).n, 0);

    /* replaced with another certificate: only the new thumbprint finds it */
    x509_doc(doc, sizeof(doc), "clientCertificates", TP_B, NULL);
    assert_int_equal(put(f->st, SCOPE, STORE_ENROLLMENT, "dev-a", "e2", "x509", doc, ts, ts,
                         STORE_PUT_UPSERT, NULL), 0);
    assert_int_equal(find(f->st, SCOPE, STORE_ENROLLMENT, TP_A).n, 0);
    assert_int_equal(find(f->st, SCOPE, STORE_ENROLLMENT, TP_A1).n, 0);
    assert_int_equal(find(f->st, SCOPE, STORE_ENROLLMENT, TP_B).n, 1);
    /* replaced by another attestation type: gone from the index */
    assert_int_equal(put(f->st, SCOPE, STORE_ENROLLMENT, "dev-a", "e3", "symmetricKey", "{}", ts,
                         ts, STORE_PUT_UPSERT, NULL), 0);
    assert_int_equal(find(f->st, SCOPE, STORE_ENROLLMENT, TP_B).n, 0);
    /* deleted: gone */
    assert_int_equal(f->st->ops->enrollment_delete(f->st, SCOPE, STORE_GROUP, "GRP-A", NULL), 0);
    assert_int_equal(find(f->st, SCOPE, STORE_GROUP, TP_A).n, 0);
    assert_int_equal(db_int(f->path, "SELECT count(*) FROM x509_thumbprints"), 0);
}

/*
 * One certificate, one entity per kind: the store refuses a second holder
 * inside its write transaction (whatever the caller checked before), and
 * writes nothing then.
 */
static void test_x509_conflict(void **state)
{
    struct fixture *f = *state;
    char doc[512], both[640];
    struct store_doc d;
    const char *ts = "2026-01-01T00:00:00.000Z";

    x509_doc(doc, sizeof(doc), "clientCertificates", TP_A, TP_A1);
    assert_int_equal(put(f->st, SCOPE, STORE_ENROLLMENT, "dev-a", "e1", "x509", doc, ts, ts,
                         STORE_PUT_CREATE, NULL), 0);
    /* the same certificate in another enrollment: refused, not stored */
    assert_int_equal(put(f->st, SCOPE, STORE_ENROLLMENT, "dev-b", "e1", "x509", doc, ts, ts,
                         STORE_PUT_CREATE, NULL), PROV_ECONFLICT);
    assert_int_equal(f->st->ops->enrollment_get(f->st, SCOPE, STORE_ENROLLMENT, "dev-b", &d),
                     PROV_ENOTFOUND);
    /* by its SHA-1 alone too */
    x509_doc(doc, sizeof(doc), "clientCertificates", TP_B, TP_A1);
    assert_int_equal(put(f->st, SCOPE, STORE_ENROLLMENT, "dev-b", "e1", "x509", doc, ts, ts,
                         STORE_PUT_CREATE, NULL), PROV_ECONFLICT);
    /* an existing enrollment that takes it: refused, the old document kept */
    x509_doc(doc, sizeof(doc), "clientCertificates", TP_B, NULL);
    assert_int_equal(put(f->st, SCOPE, STORE_ENROLLMENT, "dev-b", "e1", "x509", doc, ts, ts,
                         STORE_PUT_CREATE, NULL), 0);
    snprintf(both, sizeof(both),
             "{\"attestation\":{\"type\":\"x509\",\"x509\":{\"clientCertificates\":{"
             "\"primary\":{\"info\":{\"sha256Thumbprint\":\"%s\"}},"
             "\"secondary\":{\"info\":{\"sha256Thumbprint\":\"%s\"}}}}}}", TP_B, TP_A);
    assert_int_equal(put(f->st, SCOPE, STORE_ENROLLMENT, "dev-b", "e2", "x509", both, ts, ts,
                         STORE_PUT_UPSERT, NULL), PROV_ECONFLICT);
    expect_etag(f->st, STORE_ENROLLMENT, "dev-b", "e1");
    assert_int_equal(find(f->st, SCOPE, STORE_ENROLLMENT, TP_A).n, 1);
    /* rewriting the holder itself, another kind or another scope: fine */
    x509_doc(doc, sizeof(doc), "clientCertificates", TP_A, TP_A1);
    assert_int_equal(put(f->st, SCOPE, STORE_ENROLLMENT, "DEV-A", "e2", "x509", doc, ts, ts,
                         STORE_PUT_UPSERT, NULL), 0);
    assert_int_equal(put(f->st, SCOPE, STORE_GROUP, "grp", "e1", "x509", doc, ts, ts,
                         STORE_PUT_CREATE, NULL), 0);
    assert_int_equal(put(f->st, SCOPE2, STORE_ENROLLMENT, "dev-b", "e1", "x509", doc, ts, ts,
                         STORE_PUT_CREATE, NULL), 0);
    /* once the holder is gone, the certificate is free */
    assert_int_equal(f->st->ops->enrollment_delete(f->st, SCOPE, STORE_ENROLLMENT, "dev-a", NULL),
                     0);
    assert_int_equal(put(f->st, SCOPE, STORE_ENROLLMENT, "dev-b", "e3", "x509", both, ts, ts,
                         STORE_PUT_UPSERT, NULL), 0);
}

/* A version-1 database gets the index filled from the enrollments it already holds. */
static void test_x509_index_migration(void **state)
{
    struct fixture *f = *state;
    char path[128], err[256], sql[4096], doc[512];
    struct store *st = NULL;
    struct found fd;

    snprintf(path, sizeof(path), "%s/v1.db", f->dir);
    x509_doc(doc, sizeof(doc), "clientCertificates", TP_A, TP_A1);
    {
        sqlite3 *db = NULL;

        assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
        sqlite3_close(db);
    }
    snprintf(sql, sizeof(sql),
             "CREATE TABLE schema_version(version INTEGER PRIMARY KEY, applied TEXT NOT NULL);"
             "INSERT INTO schema_version VALUES(1, 'v1');"
             "CREATE TABLE enrollments(scope TEXT NOT NULL, kind INTEGER NOT NULL,"
             " id_key TEXT NOT NULL, id TEXT NOT NULL, etag TEXT NOT NULL,"
             " attestation TEXT NOT NULL, doc TEXT NOT NULL, created TEXT NOT NULL,"
             " updated TEXT NOT NULL, PRIMARY KEY(scope, kind, id_key));"
             "CREATE INDEX enrollments_att ON enrollments(scope, kind, attestation, id_key);"
             "CREATE TABLE registrations(scope TEXT NOT NULL, id_key TEXT NOT NULL,"
             " id TEXT NOT NULL, group_key TEXT, etag TEXT NOT NULL, doc TEXT NOT NULL,"
             " created TEXT NOT NULL, updated TEXT NOT NULL, PRIMARY KEY(scope, id_key));"
             "CREATE INDEX registrations_group ON registrations(scope, group_key, id_key);"
             "CREATE TABLE operations(id TEXT PRIMARY KEY, scope TEXT NOT NULL,"
             " registration_id TEXT NOT NULL, doc TEXT NOT NULL, created TEXT NOT NULL,"
             " expires INTEGER NOT NULL);"
             "CREATE INDEX operations_expires ON operations(expires);"
             "INSERT INTO enrollments VALUES('%s', %d, 'old-dev', 'Old-Dev', 'e1', 'x509', '%s',"
             " 't', 't');"
             "INSERT INTO enrollments VALUES('%s', %d, 'bad', 'bad', 'e1', 'x509', '{broken', 't',"
             " 't');",
             SCOPE, (int)STORE_ENROLLMENT, doc, SCOPE, (int)STORE_ENROLLMENT);
    db_exec(path, sql);
    assert_int_equal(store_sqlite_open(path, &st, err, sizeof(err)), 0);
    assert_int_equal(db_int(path, "SELECT max(version) FROM schema_version"), SCHEMA);
    fd = find(st, SCOPE, STORE_ENROLLMENT, TP_A);
    assert_int_equal(fd.n, 1);
    assert_string_equal(fd.ids[0], "Old-Dev");
    assert_int_equal(find(st, SCOPE, STORE_ENROLLMENT, TP_A1).n, 1);
    store_close(st);
    remove_db(path);
}

static void test_open_schema(void **state)
{
    struct fixture *f = *state;
    struct store_doc d;
    struct stat sb;
    char err[256];

    assert_int_equal(db_int(f->path, "SELECT max(version) FROM schema_version"), SCHEMA);
    assert_int_equal(db_int(f->path, "SELECT count(*) FROM schema_version"), SCHEMA);
    assert_int_equal(db_int(f->path, "SELECT count(*) FROM sqlite_master WHERE name IN"
                                     " ('enrollments', 'registrations', 'operations',"
                                     " 'enrollments_att', 'registrations_group',"
                                     " 'operations_expires', 'x509_thumbprints')"),
                     7);
    assert_int_equal(db_int(f->path, "SELECT count(*) FROM pragma_journal_mode"
                                     " WHERE journal_mode = 'wal'"),
                     1);
    assert_int_equal(stat(f->path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);

    /* reopening applies nothing and keeps the data */
    assert_int_equal(put_simple(f->st, "dev-1", "e1", STORE_PUT_CREATE, NULL), 0);
    store_close(f->st);
    f->st = NULL;
    for (int i = 0; i < 2; i++) {
        assert_int_equal(store_sqlite_open(f->path, &f->st, err, sizeof(err)), 0);
        assert_int_equal(db_int(f->path, "SELECT count(*) FROM schema_version"), SCHEMA);
        assert_int_equal(f->st->ops->enrollment_get(f->st, SCOPE, STORE_ENROLLMENT, "dev-1", &d),
                         0);
        assert_string_equal(d.etag, "e1");
        store_doc_release(&d);
        store_close(f->st);
        f->st = NULL;
    }
    assert_int_equal(store_sqlite_open(f->path, &f->st, err, sizeof(err)), 0);
}

static void test_open_newer_schema_refused(void **state)
{
    struct fixture *f = *state;
    struct store *st = (struct store *)&st;
    char err[256] = "";

    store_close(f->st);
    f->st = NULL;
    db_exec(f->path, "INSERT INTO schema_version(version, applied) VALUES(99, 'later')");
    assert_int_equal(store_sqlite_open(f->path, &st, err, sizeof(err)), PROV_ESTORE);
    assert_null(st);
    assert_non_null(strstr(err, "newer"));
    assert_non_null(strstr(err, "99"));
    /* refused without touching the file */
    assert_int_equal(db_int(f->path, "SELECT max(version) FROM schema_version"), 99);
    assert_int_equal(db_int(f->path, "SELECT count(*) FROM schema_version"), SCHEMA + 1);

    db_exec(f->path, "DELETE FROM schema_version WHERE version = 99");
    assert_int_equal(store_sqlite_open(f->path, &f->st, err, sizeof(err)), 0);
}

static void test_open_bad_files(void **state)
{
    struct fixture *f = *state;
    struct store *st = NULL;
    char path[160], err[256] = "";
    int fd;

    /* not a database */
    snprintf(path, sizeof(path), "%s/junk.db", f->dir);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    for (int i = 0; i < 64; i++)
        assert_int_equal(write(fd, "this is not an sqlite database file", 35), 35);
    close(fd);
    assert_int_equal(store_sqlite_open(path, &st, err, sizeof(err)), PROV_ESTORE);
    assert_null(st);
    assert_non_null(strstr(err, path));
    remove_db(path);

    /* missing directory */
    snprintf(path, sizeof(path), "%s/missing/provd.db", f->dir);
    err[0] = '\0';
    assert_int_equal(store_sqlite_open(path, &st, err, sizeof(err)), PROV_ESTORE);
    assert_null(st);
    assert_true(strlen(err) > 0);
}

/* ---- enrollments ---- */

static void test_put_get_replace(void **state)
{
    struct store *st = ((struct fixture *)*state)->st;
    struct store_doc d;

    assert_int_equal(st->ops->enrollment_get(st, SCOPE, STORE_ENROLLMENT, "dev-1", &d),
                     PROV_ENOTFOUND);
    assert_null(d.id);
    assert_int_equal(put(st, SCOPE, STORE_ENROLLMENT, "Dev-1", "e1", "x509", "{\"a\":1}",
                         "2026-01-01T00:00:00.000Z", "2026-01-01T00:00:00.000Z",
                         STORE_PUT_UPSERT, NULL),
                     0);
    assert_int_equal(st->ops->enrollment_get(st, SCOPE, STORE_ENROLLMENT, "dev-1", &d), 0);
    assert_string_equal(d.id, "Dev-1");
    assert_string_equal(d.etag, "e1");
    assert_string_equal(d.json, "{\"a\":1}");
    assert_string_equal(d.attestation, "x509");
    assert_string_equal(d.created, "2026-01-01T00:00:00.000Z");
    assert_string_equal(d.updated, "2026-01-01T00:00:00.000Z");
    assert_null(d.group_id);
    store_doc_release(&d);
    assert_null(d.id);

    /* replace: new spelling, etag, document and type; created kept */
    assert_int_equal(put(st, SCOPE, STORE_ENROLLMENT, "DEV-1", "e2", "symmetricKey",
                         "{\"a\":2}", "2030-01-01T00:00:00.000Z", "2026-02-01T00:00:00.000Z",
                         STORE_PUT_UPSERT, NULL),
                     0);
    assert_int_equal(st->ops->enrollment_get(st, SCOPE, STORE_ENROLLMENT, "Dev-1", &d), 0);
    assert_string_equal(d.id, "DEV-1");
    assert_string_equal(d.etag, "e2");
    assert_string_equal(d.json, "{\"a\":2}");
    assert_string_equal(d.attestation, "symmetricKey");
    assert_string_equal(d.created, "2026-01-01T00:00:00.000Z");
    assert_string_equal(d.updated, "2026-02-01T00:00:00.000Z");
    store_doc_release(&d);
    assert_int_equal(db_int(((struct fixture *)*state)->path,
                            "SELECT count(*) FROM enrollments WHERE id_key = 'dev-1'"),
                     1);

    /* created defaults to updated on insert */
    assert_int_equal(put(st, SCOPE, STORE_GROUP, "g", "e1", "x509", "{}", NULL,
                         "2026-03-01T00:00:00.000Z", STORE_PUT_UPSERT, NULL),
                     0);
    assert_int_equal(st->ops->enrollment_get(st, SCOPE, STORE_GROUP, "G", &d), 0);
    assert_string_equal(d.created, "2026-03-01T00:00:00.000Z");
    store_doc_release(&d);

    /* required fields */
    assert_int_equal(put(st, SCOPE, STORE_ENROLLMENT, "dev-2", NULL, "x509", "{}", NULL,
                         "2026-03-01T00:00:00.000Z", STORE_PUT_UPSERT, NULL),
                     PROV_EINVAL);
}

static void test_create_conflict(void **state)
{
    struct fixture *f = *state;
    struct store *st = f->st;
    struct store_doc d;

    assert_int_equal(put_simple(st, "dev-1", "e1", STORE_PUT_CREATE, NULL), 0);
    assert_int_equal(put(st, SCOPE, STORE_ENROLLMENT, "DEV-1", "e2", "x509", "{\"other\":1}",
                         NULL, "2027-01-01T00:00:00.000Z", STORE_PUT_CREATE, NULL),
                     PROV_EEXISTS);
    /* with a matching if_match it is still a create */
    assert_int_equal(put_simple(st, "dev-1", "e2", STORE_PUT_CREATE, "e1"), PROV_EEXISTS);
    assert_int_equal(st->ops->enrollment_get(st, SCOPE, STORE_ENROLLMENT, "dev-1", &d), 0);
    assert_string_equal(d.id, "dev-1");
    assert_string_equal(d.etag, "e1");
    assert_string_equal(d.json, "{\"k\":1}");
    store_doc_release(&d);
    assert_int_equal(db_int(f->path, "SELECT count(*) FROM enrollments"), 1);
    assert_int_equal(db_int(f->path, "SELECT count(*) FROM enrollments WHERE etag = 'e1'"
                                     " AND updated = '2026-01-02T00:00:00.000Z'"),
                     1);
}

static void test_if_match(void **state)
{
    struct fixture *f = *state;
    struct store *st = f->st;
    struct store_doc d;

    /* absent: any if_match fails and creates nothing */
    assert_int_equal(put_simple(st, "dev-1", "e1", STORE_PUT_UPSERT, "*"), PROV_EPRECONDITION);
    assert_int_equal(put_simple(st, "dev-1", "e1", STORE_PUT_UPSERT, "e0"), PROV_EPRECONDITION);
    assert_int_equal(put_simple(st, "dev-1", "e1", STORE_PUT_CREATE, "*"), PROV_EPRECONDITION);
    assert_int_equal(st->ops->enrollment_get(st, SCOPE, STORE_ENROLLMENT, "dev-1", &d),
                     PROV_ENOTFOUND);
    assert_int_equal(db_int(f->path, "SELECT count(*) FROM enrollments"), 0);

    assert_int_equal(put_simple(st, "dev-1", "e1", STORE_PUT_UPSERT, NULL), 0);
    /* matching etag */
    assert_int_equal(put_simple(st, "dev-1", "e2", STORE_PUT_UPSERT, "e1"), 0);
    expect_etag(st, STORE_ENROLLMENT, "dev-1", "e2");
    /* stale etag */
    assert_int_equal(put_simple(st, "dev-1", "e3", STORE_PUT_UPSERT, "e1"), PROV_EPRECONDITION);
    expect_etag(st, STORE_ENROLLMENT, "dev-1", "e2");
    /* quoting is the caller's job: a quoted value does not match */
    assert_int_equal(put_simple(st, "dev-1", "e3", STORE_PUT_UPSERT, "\"e2\""),
                     PROV_EPRECONDITION);
    /* etags are compared exactly */
    assert_int_equal(put_simple(st, "dev-1", "e3", STORE_PUT_UPSERT, "E2"), PROV_EPRECONDITION);
    expect_etag(st, STORE_ENROLLMENT, "dev-1", "e2");
    /* "*" on an existing document */
    assert_int_equal(put_simple(st, "dev-1", "e3", STORE_PUT_UPSERT, "*"), 0);
    expect_etag(st, STORE_ENROLLMENT, "dev-1", "e3");
    /* unconditional */
    assert_int_equal(put_simple(st, "DEV-1", "e4", STORE_PUT_UPSERT, NULL), 0);
    expect_etag(st, STORE_ENROLLMENT, "dev-1", "e4");
    /* the etag of another kind does not count */
    assert_int_equal(put(st, SCOPE, STORE_GROUP, "dev-1", "g1", "x509", "{}", NULL,
                         "2026-01-01T00:00:00.000Z", STORE_PUT_UPSERT, "e4"),
                     PROV_EPRECONDITION);
}

static void test_delete(void **state)
{
    struct fixture *f = *state;
    struct store *st = f->st;
    struct store_doc d;

    assert_int_equal(st->ops->enrollment_delete(st, SCOPE, STORE_ENROLLMENT, "dev-1", NULL),
                     PROV_ENOTFOUND);
    assert_int_equal(st->ops->enrollment_delete(st, SCOPE, STORE_ENROLLMENT, "dev-1", "*"),
                     PROV_EPRECONDITION);
    assert_int_equal(st->ops->enrollment_delete(st, SCOPE, STORE_ENROLLMENT, "dev-1", "e1"),
                     PROV_EPRECONDITION);

    assert_int_equal(put_simple(st, "Dev-1", "e1", STORE_PUT_CREATE, NULL), 0);
    assert_int_equal(st->ops->enrollment_delete(st, SCOPE, STORE_ENROLLMENT, "dev-1", "e0"),
                     PROV_EPRECONDITION);
    assert_int_equal(st->ops->enrollment_delete(st, SCOPE2, STORE_ENROLLMENT, "dev-1", NULL),
                     PROV_ENOTFOUND);
    assert_int_equal(st->ops->enrollment_delete(st, SCOPE, STORE_GROUP, "dev-1", NULL),
                     PROV_ENOTFOUND);
    expect_etag(st, STORE_ENROLLMENT, "dev-1", "e1");
    assert_int_equal(st->ops->enrollment_delete(st, SCOPE, STORE_ENROLLMENT, "DEV-1", "e1"), 0);
    assert_int_equal(st->ops->enrollment_get(st, SCOPE, STORE_ENROLLMENT, "dev-1", &d),
                     PROV_ENOTFOUND);
    assert_int_equal(db_int(f->path, "SELECT count(*) FROM enrollments"), 0);

    assert_int_equal(put_simple(st, "dev-1", "e1", STORE_PUT_CREATE, NULL), 0);
    assert_int_equal(st->ops->enrollment_delete(st, SCOPE, STORE_ENROLLMENT, "dev-1", "*"), 0);
    assert_int_equal(put_simple(st, "dev-1", "e1", STORE_PUT_CREATE, NULL), 0);
    assert_int_equal(st->ops->enrollment_delete(st, SCOPE, STORE_ENROLLMENT, "dev-1", NULL), 0);
    assert_int_equal(st->ops->enrollment_delete(st, SCOPE, STORE_ENROLLMENT, "dev-1", NULL),
                     PROV_ENOTFOUND);
}

static void test_ids_case_kind_scope(void **state)
{
    struct fixture *f = *state;
    struct store *st = f->st;
    struct store_doc d;

    assert_int_equal(put_simple(st, "MyDevice.A_b:c", "e1", STORE_PUT_CREATE, NULL), 0);
    assert_int_equal(put_simple(st, "mydevice.a_b:c", "e2", STORE_PUT_CREATE, NULL),
                     PROV_EEXISTS);
    assert_int_equal(st->ops->enrollment_get(st, SCOPE, STORE_ENROLLMENT, "MYDEVICE.A_B:C", &d),
                     0);
    assert_string_equal(d.id, "MyDevice.A_b:c");
    store_doc_release(&d);
    assert_int_equal(db_int(f->path, "SELECT count(*) FROM enrollments"
                                     " WHERE id_key = 'mydevice.a_b:c' AND id = 'MyDevice.A_b:c'"),
                     1);
    /* same id, other kind or scope: separate documents */
    assert_int_equal(put(st, SCOPE, STORE_GROUP, "mydevice.a_b:c", "g1", "x509", "{}", NULL,
                         "2026-01-01T00:00:00.000Z", STORE_PUT_CREATE, NULL),
                     0);
    assert_int_equal(put(st, SCOPE2, STORE_ENROLLMENT, "MYDEVICE.A_B:C", "s1", "tpm", "{}", NULL,
                         "2026-01-01T00:00:00.000Z", STORE_PUT_CREATE, NULL),
                     0);
    expect_etag(st, STORE_ENROLLMENT, "mydevice.a_b:c", "e1");
    expect_etag(st, STORE_GROUP, "MyDevice.A_b:c", "g1");
    assert_int_equal(st->ops->enrollment_get(st, SCOPE2, STORE_ENROLLMENT, "mydevice.a_b:c", &d),
                     0);
    assert_string_equal(d.etag, "s1");
    store_doc_release(&d);
    /* the scope is stored as given */
    assert_int_equal(st->ops->enrollment_get(st, "0NE00000001", STORE_ENROLLMENT,
                                             "mydevice.a_b:c", &d),
                     PROV_ENOTFOUND);
}

/* 25 enrollments dev-00..dev-24 in a scrambled order and mixed case. */
static void fill_25(struct store *st)
{
    for (int k = 0; k < 25; k++) {
        int i = (k * 7) % 25;
        char id[32], etag[16];

        snprintf(id, sizeof(id), i % 2 ? "DEV-%02d" : "dev-%02d", i);
        snprintf(etag, sizeof(etag), "e%d", i);
        assert_int_equal(put(st, SCOPE, STORE_ENROLLMENT, id, etag,
                             i % 3 == 0 ? "x509" : "symmetricKey", "{}", NULL,
                             "2026-01-01T00:00:00.000Z", STORE_PUT_CREATE, NULL),
                         0);
    }
    /* noise the listings must not see */
    assert_int_equal(put(st, SCOPE2, STORE_ENROLLMENT, "dev-05x", "z", "x509", "{}", NULL,
                         "2026-01-01T00:00:00.000Z", STORE_PUT_CREATE, NULL),
                     0);
    assert_int_equal(put(st, SCOPE, STORE_GROUP, "dev-05y", "z", "x509", "{}", NULL,
                         "2026-01-01T00:00:00.000Z", STORE_PUT_CREATE, NULL),
                     0);
}

static void test_list_paging(void **state)
{
    struct store *st = ((struct fixture *)*state)->st;
    struct collect c;
    char after[32] = "";
    int pages[] = {10, 10, 5}, seen = 0;
    bool more;

    fill_25(st);
    for (int p = 0; p < 3; p++) {
        collect_init(&c);
        c.st = st;
        more = !(p < 2);
        assert_int_equal(st->ops->enrollment_list(st, SCOPE, STORE_ENROLLMENT, NULL,
                                                  p == 0 ? NULL : after, 10, collect_cb, &c,
                                                  &more),
                         0);
        assert_int_equal(c.n, pages[p]);
        assert_int_equal(more, p < 2);
        assert_true(c.fields_ok);
        assert_true(c.reentry_ok);
        for (int i = 0; i < c.n; i++, seen++) {
            char want[32];

            snprintf(want, sizeof(want), seen % 2 ? "DEV-%02d" : "dev-%02d", seen);
            assert_string_equal(c.ids[i], want);
            assert_string_equal(c.extra[i], seen % 3 == 0 ? "x509" : "symmetricKey");
        }
        /* the cursor is compared in lower case: pass it upper-cased */
        snprintf(after, sizeof(after), "%s", c.ids[c.n - 1]);
        for (char *q = after; *q; q++)
            *q = (char)(*q >= 'a' && *q <= 'z' ? *q - 32 : *q);
    }
    assert_int_equal(seen, 25);

    /* exactly limit documents left: more stays false */
    collect_init(&c);
    assert_int_equal(st->ops->enrollment_list(st, SCOPE, STORE_ENROLLMENT, NULL, "dev-19", 5,
                                              collect_cb, &c, &more),
                     0);
    assert_int_equal(c.n, 5);
    assert_false(more);
    assert_string_equal(c.ids[0], "dev-20");

    /* a cursor that is not an id */
    collect_init(&c);
    assert_int_equal(st->ops->enrollment_list(st, SCOPE, STORE_ENROLLMENT, NULL, "dev-1", 100,
                                              collect_cb, &c, &more),
                     0);
    assert_int_equal(c.n, 15);
    assert_string_equal(c.ids[0], "dev-10");
    assert_false(more);

    /* limit 0 only reports whether there is anything */
    collect_init(&c);
    assert_int_equal(st->ops->enrollment_list(st, SCOPE, STORE_ENROLLMENT, NULL, NULL, 0,
                                              collect_cb, &c, &more),
                     0);
    assert_int_equal(c.n, 0);
    assert_true(more);

    /* the callback stops early */
    collect_init(&c);
    c.stop_after = 3;
    assert_int_equal(st->ops->enrollment_list(st, SCOPE, STORE_ENROLLMENT, NULL, NULL, 10,
                                              collect_cb, &c, &more),
                     0);
    assert_int_equal(c.n, 3);

    /* another scope, another kind */
    collect_init(&c);
    assert_int_equal(st->ops->enrollment_list(st, SCOPE2, STORE_ENROLLMENT, NULL, NULL, 10,
                                              collect_cb, &c, &more),
                     0);
    assert_int_equal(c.n, 1);
    assert_string_equal(c.ids[0], "dev-05x");
    collect_init(&c);
    assert_int_equal(st->ops->enrollment_list(st, SCOPE, STORE_GROUP, NULL, NULL, 10, collect_cb,
                                              &c, &more),
                     0);
    assert_int_equal(c.n, 1);
    assert_false(more);

    assert_int_equal(st->ops->enrollment_list(st, SCOPE, STORE_ENROLLMENT, NULL, NULL, -1,
                                              collect_cb, &c, &more),
                     PROV_EINVAL);
}

static void test_list_attestation(void **state)
{
    struct store *st = ((struct fixture *)*state)->st;
    struct collect c;
    const char *after = NULL;
    int pages[] = {4, 4, 1}, seen = 0;
    char last[32];
    bool more;

    fill_25(st);
    /* x509: dev-00, 03, ..., 24 = 9 documents */
    for (int p = 0; p < 3; p++) {
        collect_init(&c);
        assert_int_equal(st->ops->enrollment_list(st, SCOPE, STORE_ENROLLMENT, "x509", after, 4,
                                                  collect_cb, &c, &more),
                         0);
        assert_int_equal(c.n, pages[p]);
        assert_int_equal(more, p < 2);
        for (int i = 0; i < c.n; i++, seen++) {
            char want[32];
            int num = seen * 3;

            snprintf(want, sizeof(want), num % 2 ? "DEV-%02d" : "dev-%02d", num);
            assert_string_equal(c.ids[i], want);
            assert_string_equal(c.extra[i], "x509");
        }
        snprintf(last, sizeof(last), "%s", c.ids[c.n - 1]);
        after = last;
    }
    assert_int_equal(seen, 9);

    collect_init(&c);
    assert_int_equal(st->ops->enrollment_list(st, SCOPE, STORE_ENROLLMENT, "tpm", NULL, 10,
                                              collect_cb, &c, &more),
                     0);
    assert_int_equal(c.n, 0);
    assert_false(more);
}

static void test_count(void **state)
{
    struct store *st = ((struct fixture *)*state)->st;
    long n = -1;

    assert_int_equal(st->ops->enrollment_count(st, SCOPE, STORE_ENROLLMENT, NULL, &n), 0);
    assert_int_equal(n, 0);
    fill_25(st);
    assert_int_equal(st->ops->enrollment_count(st, SCOPE, STORE_ENROLLMENT, NULL, &n), 0);
    assert_int_equal(n, 25);
    assert_int_equal(st->ops->enrollment_count(st, SCOPE, STORE_ENROLLMENT, "x509", &n), 0);
    assert_int_equal(n, 9);
    assert_int_equal(st->ops->enrollment_count(st, SCOPE, STORE_ENROLLMENT, "symmetricKey", &n),
                     0);
    assert_int_equal(n, 16);
    assert_int_equal(st->ops->enrollment_count(st, SCOPE, STORE_GROUP, NULL, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(st->ops->enrollment_count(st, SCOPE2, STORE_ENROLLMENT, "x509", &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(st->ops->enrollment_delete(st, SCOPE, STORE_ENROLLMENT, "dev-03", NULL), 0);
    assert_int_equal(st->ops->enrollment_count(st, SCOPE, STORE_ENROLLMENT, "x509", &n), 0);
    assert_int_equal(n, 8);
}

/* ---- registrations and operations ---- */

static void test_commit_and_operation(void **state)
{
    struct fixture *f = *state;
    struct store *st = f->st;
    struct store_doc d;

    assert_int_equal(commit(st, SCOPE, "Device-1", "GroupA", "r1", "{\"v\":1}",
                            "2026-01-01T00:00:00.000Z", "2026-01-01T00:00:00.000Z", "op-1", 1000),
                     0);
    assert_int_equal(st->ops->registration_get(st, SCOPE, "device-1", &d), 0);
    assert_string_equal(d.id, "Device-1");
    assert_string_equal(d.etag, "r1");
    assert_string_equal(d.json, "{\"v\":1}");
    assert_string_equal(d.created, "2026-01-01T00:00:00.000Z");
    assert_string_equal(d.updated, "2026-01-01T00:00:00.000Z");
    assert_string_equal(d.group_id, "groupa");
    assert_null(d.attestation);
    store_doc_release(&d);
    assert_int_equal(st->ops->registration_get(st, SCOPE2, "device-1", &d), PROV_ENOTFOUND);

    assert_int_equal(st->ops->operation_get(st, SCOPE, "op-1", 999, &d), 0);
    assert_string_equal(d.id, "Device-1");
    assert_string_equal(d.json, "{\"status\":\"assigned\"}");
    assert_string_equal(d.created, "2026-01-01T00:00:00.000Z");
    store_doc_release(&d);
    assert_int_equal(st->ops->operation_get(st, SCOPE, "op-1", 1000, &d), PROV_ENOTFOUND);
    assert_int_equal(st->ops->operation_get(st, SCOPE2, "op-1", 999, &d), PROV_ENOTFOUND);
    assert_int_equal(st->ops->operation_get(st, SCOPE, "op-x", 0, &d), PROV_ENOTFOUND);
    assert_null(d.id);

    /* re-registration: the record is replaced, created kept */
    assert_int_equal(commit(st, SCOPE, "DEVICE-1", NULL, "r2", "{\"v\":2}",
                            "2031-01-01T00:00:00.000Z", "2026-06-01T00:00:00.000Z", "op-2", 2000),
                     0);
    assert_int_equal(st->ops->registration_get(st, SCOPE, "Device-1", &d), 0);
    assert_string_equal(d.id, "DEVICE-1");
    assert_string_equal(d.etag, "r2");
    assert_string_equal(d.json, "{\"v\":2}");
    assert_string_equal(d.created, "2026-01-01T00:00:00.000Z");
    assert_string_equal(d.updated, "2026-06-01T00:00:00.000Z");
    assert_null(d.group_id);
    store_doc_release(&d);
    assert_int_equal(st->ops->operation_get(st, SCOPE, "op-2", 1500, &d), 0);
    assert_string_equal(d.id, "DEVICE-1");
    assert_string_equal(d.created, "2026-06-01T00:00:00.000Z");
    store_doc_release(&d);

    /* one transaction: another registration's operation id leaves the record untouched */
    assert_int_equal(commit(st, SCOPE, "device-9", "g", "r3", "{\"v\":3}", NULL,
                            "2026-07-01T00:00:00.000Z", "op-1", 3000),
                     PROV_EEXISTS);
    assert_int_equal(st->ops->registration_get(st, SCOPE, "device-1", &d), 0);
    assert_string_equal(d.etag, "r2");
    store_doc_release(&d);
    assert_int_equal(st->ops->registration_get(st, SCOPE, "device-9", &d), PROV_ENOTFOUND);
    assert_int_equal(db_int(f->path, "SELECT count(*) FROM registrations"), 1);
    assert_int_equal(db_int(f->path, "SELECT count(*) FROM operations"), 2);
    assert_int_equal(db_int(f->path, "SELECT expires FROM operations WHERE id = 'op-2'"), 2000);

    /* the same registration's operation id again: an assigner finishing it replaces the document */
    assert_int_equal(commit(st, SCOPE, "device-1", NULL, "r4", "{\"v\":4}", NULL,
                            "2026-08-01T00:00:00.000Z", "op-2", 2000),
                     0);
    assert_int_equal(db_int(f->path, "SELECT count(*) FROM operations"), 2);
    assert_int_equal(st->ops->registration_get(st, SCOPE, "device-1", &d), 0);
    assert_string_equal(d.etag, "r4");
    store_doc_release(&d);

    /* expiry */
    assert_int_equal(st->ops->operation_expire(st, 1500), 1);
    assert_int_equal(st->ops->operation_expire(st, 1500), 0);
    assert_int_equal(st->ops->operation_get(st, SCOPE, "op-1", 0, &d), PROV_ENOTFOUND);
    assert_int_equal(st->ops->operation_get(st, SCOPE, "op-2", 0, &d), 0);
    store_doc_release(&d);
    assert_int_equal(st->ops->operation_expire(st, 2000), 1);
    assert_int_equal(db_int(f->path, "SELECT count(*) FROM operations"), 0);
    /* the registration record outlives its operations */
    assert_int_equal(st->ops->registration_get(st, SCOPE, "device-1", &d), 0);
    store_doc_release(&d);
}

static void test_registration_list(void **state)
{
    struct store *st = ((struct fixture *)*state)->st;
    struct collect c;
    char after[32] = "";
    int pages[] = {6, 6, 3}, seen = 0;
    bool more;

    for (int i = 0; i < 23; i++) {
        char id[32], op[32];
        const char *group = i < 15 ? (i % 2 ? "Group-1" : "group-1") : (i < 20 ? "other" : NULL);

        snprintf(id, sizeof(id), i % 2 ? "REG-%02d" : "reg-%02d", i);
        snprintf(op, sizeof(op), "op-%d", i);
        assert_int_equal(commit(st, SCOPE, id, group, "r", "{}", NULL, "2026-01-01T00:00:00.000Z",
                                op, 100),
                         0);
    }
    assert_int_equal(commit(st, SCOPE2, "reg-00", "group-1", "r", "{}", NULL,
                            "2026-01-01T00:00:00.000Z", "op-x", 100),
                     0);

    for (int p = 0; p < 3; p++) {
        collect_init(&c);
        assert_int_equal(st->ops->registration_list(st, SCOPE, "GROUP-1", p == 0 ? NULL : after,
                                                    6, collect_cb, &c, &more),
                         0);
        assert_int_equal(c.n, pages[p]);
        assert_int_equal(more, p < 2);
        assert_true(c.fields_ok);
        for (int i = 0; i < c.n; i++, seen++) {
            char want[32];

            snprintf(want, sizeof(want), seen % 2 ? "REG-%02d" : "reg-%02d", seen);
            assert_string_equal(c.ids[i], want);
            assert_string_equal(c.extra[i], "group-1");
        }
        snprintf(after, sizeof(after), "%s", c.ids[c.n - 1]);
    }
    assert_int_equal(seen, 15);

    collect_init(&c);
    assert_int_equal(st->ops->registration_list(st, SCOPE, "Other", NULL, 10, collect_cb, &c,
                                                &more),
                     0);
    assert_int_equal(c.n, 5);
    assert_false(more);
    assert_string_equal(c.ids[0], "REG-15");

    collect_init(&c);
    assert_int_equal(st->ops->registration_list(st, SCOPE, "none", NULL, 10, collect_cb, &c,
                                                &more),
                     0);
    assert_int_equal(c.n, 0);

    collect_init(&c);
    assert_int_equal(st->ops->registration_list(st, SCOPE2, "group-1", NULL, 10, collect_cb, &c,
                                                &more),
                     0);
    assert_int_equal(c.n, 1);
}

static void test_registration_delete(void **state)
{
    struct fixture *f = *state;
    struct store *st = f->st;
    struct store_doc d;

    assert_int_equal(st->ops->registration_delete(st, SCOPE, "dev-1", NULL), PROV_ENOTFOUND);
    assert_int_equal(st->ops->registration_delete(st, SCOPE, "dev-1", "*"), PROV_EPRECONDITION);
    assert_int_equal(st->ops->registration_delete(st, SCOPE, "dev-1", "r1"), PROV_EPRECONDITION);

    assert_int_equal(commit(st, SCOPE, "Dev-1", NULL, "r1", "{}", NULL,
                            "2026-01-01T00:00:00.000Z", "op-1", 100),
                     0);
    assert_int_equal(st->ops->registration_delete(st, SCOPE, "dev-1", "r0"), PROV_EPRECONDITION);
    assert_int_equal(st->ops->registration_delete(st, SCOPE, "dev-1", "\"r1\""),
                     PROV_EPRECONDITION);
    assert_int_equal(st->ops->registration_delete(st, SCOPE2, "dev-1", NULL), PROV_ENOTFOUND);
    assert_int_equal(db_int(f->path, "SELECT count(*) FROM registrations"), 1);
    assert_int_equal(st->ops->registration_delete(st, SCOPE, "DEV-1", "r1"), 0);
    assert_int_equal(st->ops->registration_get(st, SCOPE, "dev-1", &d), PROV_ENOTFOUND);

    assert_int_equal(commit(st, SCOPE, "dev-1", NULL, "r2", "{}", NULL,
                            "2026-01-01T00:00:00.000Z", "op-2", 100),
                     0);
    assert_int_equal(st->ops->registration_delete(st, SCOPE, "dev-1", "*"), 0);
    assert_int_equal(commit(st, SCOPE, "dev-1", NULL, "r3", "{}", NULL,
                            "2026-01-01T00:00:00.000Z", "op-3", 100),
                     0);
    assert_int_equal(st->ops->registration_delete(st, SCOPE, "dev-1", NULL), 0);
    assert_int_equal(db_int(f->path, "SELECT count(*) FROM registrations"), 0);
}

/* ---- concurrency ---- */

#define WRITERS 2
#define COMMITS 200
#define SHARED_IDS 50

struct writer {
    const char *path;
    int index;
    int open_rc;
    int failures;
    int first_error;
    char err[256];
};

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    struct store *st = NULL;

    w->open_rc = store_sqlite_open(w->path, &st, w->err, sizeof(w->err));
    if (w->open_rc != 0)
        return NULL;
    for (int i = 0; i < COMMITS; i++) {
        char id[32], op[32];
        struct store_doc d;
        int r;

        /* both writers upsert the same records, so they contend on rows too */
        snprintf(id, sizeof(id), "dev-%d", i % SHARED_IDS);
        snprintf(op, sizeof(op), "op-%d-%d", w->index, i);
        r = commit(st, SCOPE, id, "g", "r", "{}", NULL, "2026-01-01T00:00:00.000Z", op, 100);
        if (r == 0) {
            r = st->ops->operation_get(st, SCOPE, op, 0, &d);
            store_doc_release(&d);
        }
        if (r == 0 && i % 10 == 0)
            r = put_simple(st, id, "e", STORE_PUT_UPSERT, NULL);
        if (r != 0) {
            if (w->failures++ == 0)
                w->first_error = r;
        }
    }
    store_close(st);
    return NULL;
}

static void test_concurrent_writers(void **state)
{
    struct fixture *f = *state;
    pthread_t th[WRITERS];
    struct writer w[WRITERS];

    for (int i = 0; i < WRITERS; i++) {
        w[i] = (struct writer){.path = f->path, .index = i};
        assert_int_equal(pthread_create(&th[i], NULL, writer_main, &w[i]), 0);
    }
    for (int i = 0; i < WRITERS; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    for (int i = 0; i < WRITERS; i++) {
        if (w[i].open_rc != 0)
            fail_msg("writer %d: %s", i, w[i].err);
        assert_int_equal(w[i].first_error, 0);
        assert_int_equal(w[i].failures, 0);
    }
    assert_int_equal(db_int(f->path, "SELECT count(*) FROM operations"), WRITERS * COMMITS);
    assert_int_equal(db_int(f->path, "SELECT count(*) FROM registrations"), SHARED_IDS);
    assert_int_equal(db_int(f->path, "SELECT count(*) FROM enrollments"), SHARED_IDS / 10);
}

#define OPENERS 8
#define OPEN_ROUNDS 10

static pthread_barrier_t open_barrier;

static void *opener_main(void *arg)
{
    struct writer *w = arg;
    struct store *st = NULL;
    char id[32];

    /* start together: the race is over the first moments of a new file */
    pthread_barrier_wait(&open_barrier);
    w->open_rc = store_sqlite_open(w->path, &st, w->err, sizeof(w->err));
    if (w->open_rc != 0)
        return NULL;
    snprintf(id, sizeof(id), "opener-%d", w->index);
    w->first_error = put_simple(st, id, "e", STORE_PUT_CREATE, NULL);
    store_close(st);
    return NULL;
}

/* Several workers opening a brand-new file at once: one migration, no errors. */
static void test_concurrent_open(void **state)
{
    struct fixture *f = *state;
    pthread_t th[OPENERS];
    struct writer w[OPENERS];
    char path[160];

    assert_int_equal(pthread_barrier_init(&open_barrier, NULL, OPENERS), 0);
    for (int round = 0; round < OPEN_ROUNDS; round++) {
        snprintf(path, sizeof(path), "%s/fresh-%d.db", f->dir, round);
        for (int i = 0; i < OPENERS; i++) {
            w[i] = (struct writer){.path = path, .index = i};
            assert_int_equal(pthread_create(&th[i], NULL, opener_main, &w[i]), 0);
        }
        for (int i = 0; i < OPENERS; i++)
            assert_int_equal(pthread_join(th[i], NULL), 0);
        for (int i = 0; i < OPENERS; i++) {
            if (w[i].open_rc != 0)
                fail_msg("round %d, opener %d: %s", round, i, w[i].err);
            assert_int_equal(w[i].first_error, 0);
        }
        assert_int_equal(db_int(path, "SELECT count(*) FROM schema_version"), SCHEMA);
        assert_int_equal(db_int(path, "SELECT count(*) FROM enrollments"), OPENERS);
        remove_db(path);
    }
    pthread_barrier_destroy(&open_barrier);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_open_schema, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_newer_schema_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_bad_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_put_get_replace, setup, teardown),
        cmocka_unit_test_setup_teardown(test_create_conflict, setup, teardown),
        cmocka_unit_test_setup_teardown(test_if_match, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ids_case_kind_scope, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_paging, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_attestation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_count, setup, teardown),
        cmocka_unit_test_setup_teardown(test_commit_and_operation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_registration_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_registration_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_writers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_open, setup, teardown),
        cmocka_unit_test_setup_teardown(test_x509_find, setup, teardown),
        cmocka_unit_test_setup_teardown(test_x509_conflict, setup, teardown),
        cmocka_unit_test_setup_teardown(test_x509_index_migration, setup, teardown),
    };

    /* expected failures (constraint violations) are logged at warn */
    log_set_level(LOG_ERROR);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
