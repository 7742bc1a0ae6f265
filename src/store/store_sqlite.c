/*
 * The SQLite store backend: one database file in WAL mode, one connection per
 * worker thread. Every statement is prepared once when the connection opens
 * and reused (reset and cleared after each use). Writes that read before they
 * write run inside BEGIN IMMEDIATE so that concurrent connections wait on the
 * busy timeout instead of failing to upgrade a read lock.
 *
 * Listings copy the rows of a page and finish the statement before calling
 * the callback, so a callback may use the same store.
 */
#define LOG_MODULE "store"

#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "../common/errors.h"
#include "../common/log.h"

/* How long a connection waits for another one's write lock (milliseconds). */
#define STORE_BUSY_TIMEOUT_MS 30000

/*
 * Schema migrations, applied in order, one transaction each; migrations[i]
 * brings the schema from version i to version i + 1. Never edit a released
 * entry: append a new one.
 */
/* The rows of x509_thumbprints for the enrollment row R (NEW or OLD), as an INSERT ... SELECT. */
#define X509_TP_INSERT(R)                                                                          \
    "  INSERT INTO x509_thumbprints(scope, kind, thumbprint, id_key)"                              \
    "    SELECT DISTINCT " R ".scope, " R ".kind, upper(value), " R ".id_key"                      \
    "    FROM json_tree(CASE WHEN json_valid(" R ".doc) THEN " R ".doc ELSE '{}' END,"             \
    "                   '$.attestation.x509')"                                                 \
    "    WHERE key IN ('sha256Thumbprint', 'sha1Thumbprint') AND type = 'text'"

static const char *const migrations[] = {
    /* 1: initial schema */
    "CREATE TABLE enrollments(scope TEXT NOT NULL, kind INTEGER NOT NULL, id_key TEXT NOT NULL,"
    "  id TEXT NOT NULL, etag TEXT NOT NULL, attestation TEXT NOT NULL, doc TEXT NOT NULL,"
    "  created TEXT NOT NULL, updated TEXT NOT NULL, PRIMARY KEY(scope, kind, id_key));"
    "CREATE INDEX enrollments_att ON enrollments(scope, kind, attestation, id_key);"
    "CREATE TABLE registrations(scope TEXT NOT NULL, id_key TEXT NOT NULL, id TEXT NOT NULL,"
    "  group_key TEXT, etag TEXT NOT NULL, doc TEXT NOT NULL, created TEXT NOT NULL,"
    "  updated TEXT NOT NULL, PRIMARY KEY(scope, id_key));"
    "CREATE INDEX registrations_group ON registrations(scope, group_key, id_key);"
    "CREATE TABLE operations(id TEXT PRIMARY KEY, scope TEXT NOT NULL,"
    "  registration_id TEXT NOT NULL, doc TEXT NOT NULL, created TEXT NOT NULL,"
    "  expires INTEGER NOT NULL);"
    "CREATE INDEX operations_expires ON operations(expires);",
    /*
     * 2: the certificate thumbprints of X.509 enrollments and groups, kept by
     * triggers from the stored documents (every thumbprint under
     * attestation.x509, upper-cased), so that "a certificate may be in only
     * one enrollment" is an index lookup instead of a scan of the scope.
     */
    "CREATE TABLE x509_thumbprints(scope TEXT NOT NULL, kind INTEGER NOT NULL,"
    "  thumbprint TEXT NOT NULL, id_key TEXT NOT NULL);"
    "CREATE INDEX x509_thumbprints_tp ON x509_thumbprints(scope, kind, thumbprint);"
    "CREATE INDEX x509_thumbprints_owner ON x509_thumbprints(scope, kind, id_key);"
    "CREATE TRIGGER x509_thumbprints_insert AFTER INSERT ON enrollments"
    "  WHEN NEW.attestation = 'x509' BEGIN" X509_TP_INSERT("NEW") "; END;"
    "CREATE TRIGGER x509_thumbprints_update AFTER UPDATE OF doc, attestation ON enrollments BEGIN"
    "  DELETE FROM x509_thumbprints"
    "    WHERE scope = OLD.scope AND kind = OLD.kind AND id_key = OLD.id_key;"
    X509_TP_INSERT("NEW") " AND NEW.attestation = 'x509'; END;"
    "CREATE TRIGGER x509_thumbprints_delete AFTER DELETE ON enrollments"
    "  WHEN OLD.attestation = 'x509' BEGIN"
    "  DELETE FROM x509_thumbprints"
    "    WHERE scope = OLD.scope AND kind = OLD.kind AND id_key = OLD.id_key; END;"
    "INSERT INTO x509_thumbprints(scope, kind, thumbprint, id_key)"
    "  SELECT DISTINCT e.scope, e.kind, upper(t.value), e.id_key FROM enrollments e,"
    "  json_tree(CASE WHEN json_valid(e.doc) THEN e.doc ELSE '{}' END, '$.attestation.x509') t"
    "  WHERE e.attestation = 'x509' AND t.key IN ('sha256Thumbprint', 'sha1Thumbprint')"
    "  AND t.type = 'text';",
};

#define SCHEMA_VERSION ((int)(sizeof(migrations) / sizeof(migrations[0])))

enum stmt_id {
    S_BEGIN,
    S_COMMIT,
    S_ROLLBACK,
    S_SAVEPOINT,
    S_SAVEPOINT_UNDO,
    S_SAVEPOINT_RELEASE,
    S_ENR_GET,
    S_ENR_ETAG,
    S_ENR_INSERT,
    S_ENR_UPDATE,
    S_ENR_DELETE,
    S_ENR_LIST,
    S_ENR_LIST_ATT,
    S_ENR_COUNT,
    S_ENR_COUNT_ATT,
    S_ENR_X509_FIND,
    S_ENR_X509_CLASH,
    S_REG_GET,
    S_REG_ETAG,
    S_REG_DELETE,
    S_REG_LIST,
    S_REG_UPSERT,
    S_OP_INSERT,
    S_OP_GET,
    S_OP_EXPIRE,
    S_COUNT
};

/*
 * Enrollment and registration rows are read with the same column order:
 * id, etag, doc, created, updated, then attestation or group_key.
 * Enrollment statements bind ?1 scope, ?2 kind, ?3 id_key; registration
 * statements ?1 scope, ?2 id_key.
 */
#define ENR_COLS "SELECT id, etag, doc, created, updated, attestation FROM enrollments "
#define REG_COLS "SELECT id, etag, doc, created, updated, group_key FROM registrations "

static const char *const stmt_sql[S_COUNT] = {
    [S_BEGIN] = "BEGIN IMMEDIATE",
    [S_COMMIT] = "COMMIT",
    [S_ROLLBACK] = "ROLLBACK",
    [S_SAVEPOINT] = "SAVEPOINT one_commit",
    [S_SAVEPOINT_UNDO] = "ROLLBACK TO one_commit",
    [S_SAVEPOINT_RELEASE] = "RELEASE one_commit",
    [S_ENR_GET] = ENR_COLS "WHERE scope = ?1 AND kind = ?2 AND id_key = ?3",
    [S_ENR_ETAG] = "SELECT etag FROM enrollments WHERE scope = ?1 AND kind = ?2 AND id_key = ?3",
    [S_ENR_INSERT] = "INSERT INTO enrollments(scope, kind, id_key, id, etag, attestation, doc,"
                     " created, updated) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    [S_ENR_UPDATE] = "UPDATE enrollments SET id = ?4, etag = ?5, attestation = ?6, doc = ?7,"
                     " updated = ?8 WHERE scope = ?1 AND kind = ?2 AND id_key = ?3",
    [S_ENR_DELETE] = "DELETE FROM enrollments WHERE scope = ?1 AND kind = ?2 AND id_key = ?3",
    [S_ENR_LIST] = ENR_COLS "WHERE scope = ?1 AND kind = ?2 AND id_key > ?3"
                   " ORDER BY id_key LIMIT ?4",
    [S_ENR_LIST_ATT] = ENR_COLS "WHERE scope = ?1 AND kind = ?2 AND attestation = ?5"
                       " AND id_key > ?3 ORDER BY id_key LIMIT ?4",
    [S_ENR_COUNT] = "SELECT count(*) FROM enrollments WHERE scope = ?1 AND kind = ?2",
    [S_ENR_COUNT_ATT] = "SELECT count(*) FROM enrollments"
                        " WHERE scope = ?1 AND kind = ?2 AND attestation = ?3",
    [S_ENR_X509_FIND] = "SELECT e.id, e.etag, e.doc, e.created, e.updated, e.attestation"
                        " FROM x509_thumbprints t JOIN enrollments e ON e.scope = t.scope"
                        " AND e.kind = t.kind AND e.id_key = t.id_key"
                        " WHERE t.scope = ?1 AND t.kind = ?2 AND t.thumbprint = upper(?3)",
    /* another entity of the same scope and kind holding one of this one's thumbprints */
    [S_ENR_X509_CLASH] = "SELECT other.id_key FROM x509_thumbprints mine"
                         " JOIN x509_thumbprints other"
                         " ON other.scope = mine.scope AND other.kind = mine.kind"
                         " AND other.thumbprint = mine.thumbprint AND other.id_key != mine.id_key"
                         " WHERE mine.scope = ?1 AND mine.kind = ?2 AND mine.id_key = ?3 LIMIT 1",
    [S_REG_GET] = REG_COLS "WHERE scope = ?1 AND id_key = ?2",
    [S_REG_ETAG] = "SELECT etag FROM registrations WHERE scope = ?1 AND id_key = ?2",
    [S_REG_DELETE] = "DELETE FROM registrations WHERE scope = ?1 AND id_key = ?2",
    [S_REG_LIST] = REG_COLS "WHERE scope = ?1 AND group_key = ?2 AND id_key > ?3"
                   " ORDER BY id_key LIMIT ?4",
    [S_REG_UPSERT] = "INSERT INTO registrations(scope, id_key, id, group_key, etag, doc, created,"
                     " updated) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
                     " ON CONFLICT(scope, id_key) DO UPDATE SET id = excluded.id,"
                     " group_key = excluded.group_key, etag = excluded.etag,"
                     " doc = excluded.doc, updated = excluded.updated",
    /* an operation is written when it starts and again when an assigner finishes it */
    [S_OP_INSERT] = "INSERT INTO operations(id, scope, registration_id, doc, created, expires)"
                    " VALUES(?1, ?2, ?3, ?4, ?5, ?6)"
                    " ON CONFLICT(id) DO UPDATE SET doc = excluded.doc, expires = excluded.expires"
                    " WHERE lower(operations.registration_id) = lower(excluded.registration_id)"
                    " AND operations.scope = excluded.scope",
    [S_OP_GET] = "SELECT registration_id, doc, created FROM operations"
                 " WHERE id = ?1 AND scope = ?2 AND expires > ?3",
    [S_OP_EXPIRE] = "DELETE FROM operations WHERE expires <= ?1",
};

struct sqlite_store {
    struct store base; /* first, so a struct store * converts back */
    sqlite3 *db;
    sqlite3_stmt *stmt[S_COUNT];
};

static struct sqlite_store *to_sqlite(struct store *st)
{
    return (struct sqlite_store *)st;
}

/* Logs a failed SQLite call once and maps it to a PROV_E*. */
static int db_error(struct sqlite_store *ss, int rc, const char *what)
{
    if ((rc & 0xff) == SQLITE_CONSTRAINT) {
        plog(LOG_WARN, "%s: %s", what, sqlite3_errmsg(ss->db));
        return PROV_EEXISTS;
    }
    plog(LOG_ERROR, "%s: %s (sqlite error %d)", what, sqlite3_errmsg(ss->db), rc);
    return PROV_ESTORE;
}

/* Returns a statement to its unbound initial state (frees bound key copies). */
static void stmt_done(sqlite3_stmt *s)
{
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
}

/* Steps s: 1 for a row, 0 when done, else a logged PROV_E*. */
static int step(struct sqlite_store *ss, sqlite3_stmt *s, const char *what)
{
    int rc = sqlite3_step(s);

    if (rc == SQLITE_ROW)
        return 1;
    if (rc == SQLITE_DONE)
        return 0;
    return db_error(ss, rc, what);
}

/*
 * Binds parameters 1..n of s, one per character of types:
 *   't' const char * bound as is (NULL binds NULL); it must stay valid until
 *       stmt_done(s);
 *   'k' const char * bound as its ASCII lower-case form (NULL binds NULL);
 *   'i' int;  'I' long long.
 */
static int bind_args(struct sqlite_store *ss, sqlite3_stmt *s, const char *what,
                     const char *types, ...)
{
    va_list ap;
    int rc = SQLITE_OK;
    int idx = 1;

    if ((int)strlen(types) != sqlite3_bind_parameter_count(s)) {
        plog(LOG_ERROR, "%s: %zu parameters for a statement of %d", what, strlen(types),
             sqlite3_bind_parameter_count(s));
        return PROV_EINTERNAL;
    }
    va_start(ap, types);
    for (const char *t = types; *t != '\0' && rc == SQLITE_OK; t++, idx++) {
        switch (*t) {
        case 't': {
            const char *v = va_arg(ap, const char *);

            rc = v == NULL ? sqlite3_bind_null(s, idx)
                           : sqlite3_bind_text(s, idx, v, -1, SQLITE_STATIC);
            break;
        }
        case 'k': {
            const char *v = va_arg(ap, const char *);
            size_t len;
            char *low;

            if (v == NULL) {
                rc = sqlite3_bind_null(s, idx);
                break;
            }
            len = strlen(v);
            if (len > INT_MAX - 1) {
                rc = SQLITE_TOOBIG;
                break;
            }
            if ((low = malloc(len + 1)) == NULL) {
                rc = SQLITE_NOMEM;
                break;
            }
            memcpy(low, v, len + 1);
            str_lower(low);
            /* SQLite owns low from here on, also when the bind fails */
            rc = sqlite3_bind_text(s, idx, low, (int)len, free);
            break;
        }
        case 'i':
            rc = sqlite3_bind_int(s, idx, va_arg(ap, int));
            break;
        case 'I':
            rc = sqlite3_bind_int64(s, idx, (sqlite3_int64)va_arg(ap, long long));
            break;
        default:
            rc = SQLITE_MISUSE;
            break;
        }
    }
    va_end(ap);
    if (rc != SQLITE_OK) {
        plog(LOG_ERROR, "%s: binding parameter %d: %s", what, idx - 1, sqlite3_errstr(rc));
        return rc == SQLITE_NOMEM ? PROV_ENOMEM : PROV_ESTORE;
    }
    return 0;
}

/* Runs one of the parameterless transaction statements. */
static int exec_stmt(struct sqlite_store *ss, enum stmt_id id, const char *what)
{
    int r = step(ss, ss->stmt[id], what);

    stmt_done(ss->stmt[id]);
    return r < 0 ? r : 0;
}

static int txn_begin(struct sqlite_store *ss)
{
    return exec_stmt(ss, S_BEGIN, "begin transaction");
}

static void txn_rollback(struct sqlite_store *ss)
{
    /* some errors (I/O, full disk) already rolled the transaction back */
    if (!sqlite3_get_autocommit(ss->db))
        (void)exec_stmt(ss, S_ROLLBACK, "rollback");
}

/* Commits; on failure the transaction is rolled back. */
static int txn_commit(struct sqlite_store *ss)
{
    int r = exec_stmt(ss, S_COMMIT, "commit");

    if (r != 0)
        txn_rollback(ss);
    return r;
}

/* Copies column i of the current row; a NULL column gives NULL. */
static int col_dup(sqlite3_stmt *s, int i, char **out)
{
    const unsigned char *text;
    int n;

    *out = NULL;
    if (sqlite3_column_type(s, i) == SQLITE_NULL)
        return 0;
    text = sqlite3_column_text(s, i);
    n = sqlite3_column_bytes(s, i);
    if (text == NULL || n < 0)
        return PROV_ENOMEM;
    if ((*out = malloc((size_t)n + 1)) == NULL)
        return PROV_ENOMEM;
    memcpy(*out, text, (size_t)n);
    (*out)[n] = '\0';
    return 0;
}

/* Reads an ENR_COLS / REG_COLS row into out (zeroed first). */
static int read_doc(sqlite3_stmt *s, bool registration, struct store_doc *out)
{
    int r;

    *out = (struct store_doc){0};
    if ((r = col_dup(s, 0, &out->id)) != 0 || (r = col_dup(s, 1, &out->etag)) != 0 ||
        (r = col_dup(s, 2, &out->json)) != 0 || (r = col_dup(s, 3, &out->created)) != 0 ||
        (r = col_dup(s, 4, &out->updated)) != 0 ||
        (r = col_dup(s, 5, registration ? &out->group_id : &out->attestation)) != 0) {
        store_doc_release(out);
        return r;
    }
    return 0;
}

/* Runs a bound single-row lookup of an ENR_COLS / REG_COLS statement. */
static int get_doc(struct sqlite_store *ss, sqlite3_stmt *s, bool registration,
                   struct store_doc *out, const char *what)
{
    int r = step(ss, s, what);

    if (r == 1)
        r = read_doc(s, registration, out);
    else if (r == 0)
        r = PROV_ENOTFOUND;
    stmt_done(s);
    return r;
}

/*
 * Steps a bound etag lookup and applies the write conditions of store.h:
 * absent: PROV_ENOTFOUND when must_exist without if_match, PROV_EPRECONDITION
 * with an if_match; present: PROV_EEXISTS for create, PROV_EPRECONDITION when
 * if_match is neither "*" nor the stored etag. *exists reports the row.
 */
static int check_etag(struct sqlite_store *ss, sqlite3_stmt *s, bool must_exist, bool create,
                      const char *if_match, bool *exists, const char *what)
{
    int r = step(ss, s, what);

    *exists = r == 1;
    if (r < 0)
        goto out;
    r = 0;
    if (!*exists) {
        if (if_match != NULL)
            r = PROV_EPRECONDITION;
        else if (must_exist)
            r = PROV_ENOTFOUND;
        goto out;
    }
    if (create) {
        r = PROV_EEXISTS;
    } else if (if_match != NULL && strcmp(if_match, "*") != 0) {
        const unsigned char *etag = sqlite3_column_text(s, 0);

        if (etag == NULL || strcmp((const char *)etag, if_match) != 0)
            r = PROV_EPRECONDITION;
    }
out:
    stmt_done(s);
    return r;
}

/*
 * Steps a bound listing statement (bound with limit + 1 rows), copies at most
 * limit rows, finishes the statement, then hands the copies to cb.
 */
static int run_list(struct sqlite_store *ss, sqlite3_stmt *s, bool registration, int limit,
                    store_list_cb cb, void *arg, bool *more, const char *what)
{
    struct store_doc *docs = NULL;
    size_t n = 0, cap = 0;
    bool extra = false;
    int r;

    while ((r = step(ss, s, what)) == 1) {
        if (n == (size_t)limit) {
            extra = true;
            break;
        }
        if (n == cap) {
            size_t ncap = cap == 0 ? 16 : cap * 2;
            struct store_doc *nd = realloc(docs, ncap * sizeof(*docs));

            if (nd == NULL) {
                r = PROV_ENOMEM;
                break;
            }
            docs = nd;
            cap = ncap;
        }
        if ((r = read_doc(s, registration, &docs[n])) != 0)
            break;
        n++;
    }
    stmt_done(s);
    if (r < 0)
        goto out;
    r = 0;
    if (more != NULL)
        *more = extra;
    for (size_t i = 0; i < n; i++) {
        if (cb(arg, &docs[i]) != 0)
            break;
    }
out:
    for (size_t i = 0; i < n; i++)
        store_doc_release(&docs[i]);
    free(docs);
    return r;
}

static void sqlite_close(struct store *st)
{
    struct sqlite_store *ss = to_sqlite(st);
    int rc;

    for (int i = 0; i < S_COUNT; i++)
        sqlite3_finalize(ss->stmt[i]);
    if (ss->db != NULL && (rc = sqlite3_close(ss->db)) != SQLITE_OK)
        plog(LOG_ERROR, "close: %s (sqlite error %d)", sqlite3_errmsg(ss->db), rc);
    free(ss);
}

static int enrollment_get(struct store *st, const char *scope, enum store_kind kind,
                          const char *id, struct store_doc *out)
{
    struct sqlite_store *ss = to_sqlite(st);
    sqlite3_stmt *s = ss->stmt[S_ENR_GET];
    int r;

    *out = (struct store_doc){0};
    if (scope == NULL || id == NULL)
        return PROV_EINVAL;
    if ((r = bind_args(ss, s, "enrollment get", "tik", scope, (int)kind, id)) != 0) {
        stmt_done(s);
        return r;
    }
    return get_doc(ss, s, false, out, "enrollment get");
}

static int enrollment_put(struct store *st, const char *scope, enum store_kind kind,
                          const struct store_doc *doc, enum store_put_mode mode,
                          const char *if_match)
{
    static const char what[] = "enrollment put";
    struct sqlite_store *ss = to_sqlite(st);
    sqlite3_stmt *s;
    bool in_txn = false, exists = false;
    int r = PROV_EINTERNAL;

    if (scope == NULL || doc == NULL || doc->id == NULL || doc->etag == NULL ||
        doc->json == NULL || doc->attestation == NULL || doc->updated == NULL)
        return PROV_EINVAL;
    if ((r = txn_begin(ss)) != 0)
        return r;
    in_txn = true;

    s = ss->stmt[S_ENR_ETAG];
    if ((r = bind_args(ss, s, what, "tik", scope, (int)kind, doc->id)) != 0) {
        stmt_done(s);
        goto out;
    }
    if ((r = check_etag(ss, s, false, mode == STORE_PUT_CREATE, if_match, &exists, what)) != 0)
        goto out;

    if (exists) {
        s = ss->stmt[S_ENR_UPDATE];
        r = bind_args(ss, s, what, "tikttttt", scope, (int)kind, doc->id, doc->id, doc->etag,
                      doc->attestation, doc->json, doc->updated);
    } else {
        s = ss->stmt[S_ENR_INSERT];
        r = bind_args(ss, s, what, "tiktttttt", scope, (int)kind, doc->id, doc->id, doc->etag,
                      doc->attestation, doc->json,
                      doc->created != NULL ? doc->created : doc->updated, doc->updated);
    }
    if (r == 0)
        r = step(ss, s, what);
    stmt_done(s);
    if (r < 0)
        goto out;
    /*
     * A certificate may be in only one X.509 entity of a kind: checked here,
     * inside the write transaction, so two writers of one certificate cannot
     * both succeed (the service API checks first, for its precise message).
     */
    if (strcmp(doc->attestation, "x509") == 0) {
        s = ss->stmt[S_ENR_X509_CLASH];
        if ((r = bind_args(ss, s, what, "tik", scope, (int)kind, doc->id)) == 0)
            r = step(ss, s, what);
        stmt_done(s);
        if (r < 0)
            goto out;
        if (r == 1) {
            r = PROV_ECONFLICT;
            goto out;
        }
    }

    in_txn = false;
    r = txn_commit(ss);
out:
    if (in_txn)
        txn_rollback(ss);
    return r;
}

static int enrollment_delete(struct store *st, const char *scope, enum store_kind kind,
                             const char *id, const char *if_match)
{
    static const char what[] = "enrollment delete";
    struct sqlite_store *ss = to_sqlite(st);
    sqlite3_stmt *s;
    bool in_txn = false, exists = false;
    int r = PROV_EINTERNAL;

    if (scope == NULL || id == NULL)
        return PROV_EINVAL;
    if ((r = txn_begin(ss)) != 0)
        return r;
    in_txn = true;

    s = ss->stmt[S_ENR_ETAG];
    if ((r = bind_args(ss, s, what, "tik", scope, (int)kind, id)) != 0) {
        stmt_done(s);
        goto out;
    }
    if ((r = check_etag(ss, s, true, false, if_match, &exists, what)) != 0)
        goto out;

    s = ss->stmt[S_ENR_DELETE];
    if ((r = bind_args(ss, s, what, "tik", scope, (int)kind, id)) == 0)
        r = step(ss, s, what);
    stmt_done(s);
    if (r < 0)
        goto out;

    in_txn = false;
    r = txn_commit(ss);
out:
    if (in_txn)
        txn_rollback(ss);
    return r;
}

static int enrollment_list(struct store *st, const char *scope, enum store_kind kind,
                           const char *attestation, const char *after, int limit,
                           store_list_cb cb, void *arg, bool *more)
{
    static const char what[] = "enrollment list";
    struct sqlite_store *ss = to_sqlite(st);
    sqlite3_stmt *s;
    int r;

    if (more != NULL)
        *more = false;
    if (scope == NULL || cb == NULL || limit < 0)
        return PROV_EINVAL;
    if (attestation != NULL) {
        s = ss->stmt[S_ENR_LIST_ATT];
        r = bind_args(ss, s, what, "tikIt", scope, (int)kind, after != NULL ? after : "",
                      (long long)limit + 1, attestation);
    } else {
        s = ss->stmt[S_ENR_LIST];
        r = bind_args(ss, s, what, "tikI", scope, (int)kind, after != NULL ? after : "",
                      (long long)limit + 1);
    }
    if (r != 0) {
        stmt_done(s);
        return r;
    }
    return run_list(ss, s, false, limit, cb, arg, more, what);
}

/* Wraps a list callback and remembers whether it asked to stop. */
struct stop_flag {
    store_list_cb cb;
    void *arg;
    bool stopped;
};

static int stop_after(void *arg, const struct store_doc *d)
{
    struct stop_flag *sf = arg;

    if (sf->cb(sf->arg, d) == 0)
        return 0;
    sf->stopped = true;
    return 1;
}

static int enrollment_x509_find(struct store *st, const char *scope, enum store_kind kind,
                                const char *const *thumbprints, size_t n, store_list_cb cb,
                                void *arg)
{
    static const char what[] = "X.509 thumbprint lookup";
    struct sqlite_store *ss = to_sqlite(st);
    sqlite3_stmt *s = ss->stmt[S_ENR_X509_FIND];
    int r = 0;

    if (scope == NULL || cb == NULL || (n > 0 && thumbprints == NULL))
        return PROV_EINVAL;
    for (size_t i = 0; i < n && r == 0; i++) {
        struct stop_flag sf = {.cb = cb, .arg = arg};

        if ((r = bind_args(ss, s, what, "tit", scope, (int)kind, thumbprints[i])) != 0) {
            stmt_done(s);
            break;
        }
        /* every row: a thumbprint names at most a few entities */
        if ((r = run_list(ss, s, false, INT_MAX, stop_after, &sf, NULL, what)) == 0 && sf.stopped)
            break;
    }
    return r;
}

static int enrollment_count(struct store *st, const char *scope, enum store_kind kind,
                            const char *attestation, long *count)
{
    static const char what[] = "enrollment count";
    struct sqlite_store *ss = to_sqlite(st);
    sqlite3_stmt *s;
    int r;

    *count = 0;
    if (scope == NULL)
        return PROV_EINVAL;
    if (attestation != NULL) {
        s = ss->stmt[S_ENR_COUNT_ATT];
        r = bind_args(ss, s, what, "tit", scope, (int)kind, attestation);
    } else {
        s = ss->stmt[S_ENR_COUNT];
        r = bind_args(ss, s, what, "ti", scope, (int)kind);
    }
    if (r == 0 && (r = step(ss, s, what)) == 1) {
        sqlite3_int64 n = sqlite3_column_int64(s, 0);

        *count = n > LONG_MAX ? LONG_MAX : (long)n;
        r = 0;
    } else if (r == 0) {
        r = db_error(ss, SQLITE_INTERNAL, what); /* count(*) always yields a row */
    }
    stmt_done(s);
    return r;
}

static int registration_get(struct store *st, const char *scope, const char *id,
                            struct store_doc *out)
{
    struct sqlite_store *ss = to_sqlite(st);
    sqlite3_stmt *s = ss->stmt[S_REG_GET];
    int r;

    *out = (struct store_doc){0};
    if (scope == NULL || id == NULL)
        return PROV_EINVAL;
    if ((r = bind_args(ss, s, "registration get", "tk", scope, id)) != 0) {
        stmt_done(s);
        return r;
    }
    return get_doc(ss, s, true, out, "registration get");
}

static int registration_delete(struct store *st, const char *scope, const char *id,
                               const char *if_match)
{
    static const char what[] = "registration delete";
    struct sqlite_store *ss = to_sqlite(st);
    sqlite3_stmt *s;
    bool in_txn = false, exists = false;
    int r = PROV_EINTERNAL;

    if (scope == NULL || id == NULL)
        return PROV_EINVAL;
    if ((r = txn_begin(ss)) != 0)
        return r;
    in_txn = true;

    s = ss->stmt[S_REG_ETAG];
    if ((r = bind_args(ss, s, what, "tk", scope, id)) != 0) {
        stmt_done(s);
        goto out;
    }
    if ((r = check_etag(ss, s, true, false, if_match, &exists, what)) != 0)
        goto out;

    s = ss->stmt[S_REG_DELETE];
    if ((r = bind_args(ss, s, what, "tk", scope, id)) == 0)
        r = step(ss, s, what);
    stmt_done(s);
    if (r < 0)
        goto out;

    in_txn = false;
    r = txn_commit(ss);
out:
    if (in_txn)
        txn_rollback(ss);
    return r;
}

static int registration_list(struct store *st, const char *scope, const char *group,
                             const char *after, int limit, store_list_cb cb, void *arg,
                             bool *more)
{
    static const char what[] = "registration list";
    struct sqlite_store *ss = to_sqlite(st);
    sqlite3_stmt *s = ss->stmt[S_REG_LIST];
    int r;

    if (more != NULL)
        *more = false;
    if (scope == NULL || group == NULL || cb == NULL || limit < 0)
        return PROV_EINVAL;
    if ((r = bind_args(ss, s, what, "tkkI", scope, group, after != NULL ? after : "",
                       (long long)limit + 1)) != 0) {
        stmt_done(s);
        return r;
    }
    return run_list(ss, s, true, limit, cb, arg, more, what);
}

/* One registration commit's writes, inside the caller's transaction. */
static int commit_one(struct sqlite_store *ss, const char *scope, const struct store_doc *reg,
                      const struct store_doc *op, long long op_expires)
{
    static const char what[] = "registration commit";
    sqlite3_stmt *s;
    int r;

    if (scope == NULL || reg == NULL || op == NULL || reg->id == NULL || reg->etag == NULL ||
        reg->json == NULL || reg->updated == NULL || op->id == NULL || op->json == NULL)
        return PROV_EINVAL;
    s = ss->stmt[S_REG_UPSERT];
    if ((r = bind_args(ss, s, what, "tktktttt", scope, reg->id, reg->id, reg->group_id,
                       reg->etag, reg->json, reg->created != NULL ? reg->created : reg->updated,
                       reg->updated)) == 0)
        r = step(ss, s, what);
    stmt_done(s);
    if (r < 0)
        return r;

    s = ss->stmt[S_OP_INSERT];
    if ((r = bind_args(ss, s, what, "tttttI", op->id, scope, reg->id, op->json,
                       op->created != NULL ? op->created : reg->updated, op_expires)) == 0)
        r = step(ss, s, what);
    stmt_done(s);
    if (r < 0)
        return r;
    /* the id is another registration's (or another scope's) operation: the upsert did nothing */
    return sqlite3_changes(ss->db) == 0 ? PROV_EEXISTS : 0;
}

static int registration_commit(struct store *st, const char *scope, const struct store_doc *reg,
                               const struct store_doc *op, long long op_expires)
{
    struct sqlite_store *ss = to_sqlite(st);
    int r;

    if ((r = txn_begin(ss)) != 0)
        return r;
    r = commit_one(ss, scope, reg, op, op_expires);
    if (r != 0) {
        txn_rollback(ss);
        return r;
    }
    return txn_commit(ss);
}

/*
 * Group commit: every item in one transaction (one fsync), each inside a
 * savepoint so that a failing item is undone alone.
 */
static int registration_commit_many(struct store *st, struct store_commit *items, size_t n)
{
    struct sqlite_store *ss = to_sqlite(st);
    int r;

    if ((r = txn_begin(ss)) != 0)
        goto all_failed;
    for (size_t i = 0; i < n; i++) {
        struct store_commit *c = &items[i];

        if ((r = exec_stmt(ss, S_SAVEPOINT, "savepoint")) != 0)
            goto rollback;
        c->result = commit_one(ss, c->scope, &c->reg, &c->op, c->op_expires);
        if (c->result != 0 && (r = exec_stmt(ss, S_SAVEPOINT_UNDO, "rollback to savepoint")) != 0)
            goto rollback;
        if ((r = exec_stmt(ss, S_SAVEPOINT_RELEASE, "release savepoint")) != 0)
            goto rollback;
    }
    if ((r = txn_commit(ss)) != 0)
        goto all_failed;
    return 0;
rollback:
    txn_rollback(ss);
all_failed:
    for (size_t i = 0; i < n; i++)
        items[i].result = r;
    return r;
}

static int operation_get(struct store *st, const char *scope, const char *operation_id,
                         long long now, struct store_doc *out)
{
    static const char what[] = "operation get";
    struct sqlite_store *ss = to_sqlite(st);
    sqlite3_stmt *s = ss->stmt[S_OP_GET];
    int r;

    *out = (struct store_doc){0};
    if (scope == NULL || operation_id == NULL)
        return PROV_EINVAL;
    if ((r = bind_args(ss, s, what, "ttI", operation_id, scope, now)) == 0 &&
        (r = step(ss, s, what)) == 1) {
        if ((r = col_dup(s, 0, &out->id)) != 0 || (r = col_dup(s, 1, &out->json)) != 0 ||
            (r = col_dup(s, 2, &out->created)) != 0)
            store_doc_release(out);
    } else if (r == 0) {
        r = PROV_ENOTFOUND;
    }
    stmt_done(s);
    return r;
}

static int operation_expire(struct store *st, long long now)
{
    static const char what[] = "operation expire";
    struct sqlite_store *ss = to_sqlite(st);
    sqlite3_stmt *s = ss->stmt[S_OP_EXPIRE];
    int r;

    if ((r = bind_args(ss, s, what, "I", now)) == 0 && (r = step(ss, s, what)) == 0) {
        sqlite3_int64 n = sqlite3_changes64(ss->db);

        r = n > INT_MAX ? INT_MAX : (int)n;
    }
    stmt_done(s);
    return r;
}

static const struct store_ops sqlite_ops = {
    .close = sqlite_close,
    .enrollment_get = enrollment_get,
    .enrollment_put = enrollment_put,
    .enrollment_delete = enrollment_delete,
    .enrollment_list = enrollment_list,
    .enrollment_x509_find = enrollment_x509_find,
    .enrollment_count = enrollment_count,
    .registration_get = registration_get,
    .registration_delete = registration_delete,
    .registration_list = registration_list,
    .registration_commit = registration_commit,
    .registration_commit_many = registration_commit_many,
    .operation_get = operation_get,
    .operation_expire = operation_expire,
};

/*
 * Opening. Errors go to the caller's err buffer (the caller logs them).
 * Some steps of an open can meet SQLITE_BUSY without SQLite calling its busy
 * handler (switching a new file to WAL while another connection does the
 * same, where waiting could deadlock); those steps are retried here until
 * the busy timeout has passed.
 */
struct opener {
    sqlite3 *db;
    const char *path;
    char *err;
    size_t errlen;
    struct timespec deadline; /* CLOCK_MONOTONIC */
    long backoff_ms;
};

/* After SQLITE_BUSY/LOCKED: sleeps and returns true while time is left. */
static bool open_retry(struct opener *o, int rc)
{
    struct timespec now, ts;

    if ((rc & 0xff) != SQLITE_BUSY && (rc & 0xff) != SQLITE_LOCKED)
        return false;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (now.tv_sec > o->deadline.tv_sec ||
        (now.tv_sec == o->deadline.tv_sec && now.tv_nsec >= o->deadline.tv_nsec))
        return false;
    ts.tv_sec = 0;
    ts.tv_nsec = o->backoff_ms * 1000000L;
    nanosleep(&ts, NULL);
    if (o->backoff_ms < 32)
        o->backoff_ms *= 2;
    return true;
}

/* Runs sql; retry only for statements that can be run again after BUSY. */
static int open_exec(struct opener *o, const char *sql, bool retry, const char *what)
{
    char *msg = NULL;
    int rc;

    while ((rc = sqlite3_exec(o->db, sql, NULL, NULL, &msg)) != SQLITE_OK && retry &&
           open_retry(o, rc)) {
        sqlite3_free(msg);
        msg = NULL;
    }
    if (rc == SQLITE_OK)
        return 0;
    snprintf(o->err, o->errlen, "%s: %s: %s", o->path, what,
             msg != NULL ? msg : sqlite3_errstr(rc));
    sqlite3_free(msg);
    return PROV_ESTORE;
}

/* Runs a read-only query for its first column of the first row, as text. */
static int open_query(struct opener *o, const char *sql, const char *what, char *out,
                      size_t outlen)
{
    sqlite3_stmt *s = NULL;
    int rc;

    out[0] = '\0';
    for (;;) {
        rc = sqlite3_prepare_v2(o->db, sql, -1, &s, NULL);
        if (rc == SQLITE_OK) {
            rc = sqlite3_step(s);
            if (rc == SQLITE_ROW) {
                const unsigned char *t = sqlite3_column_text(s, 0);

                snprintf(out, outlen, "%s", t != NULL ? (const char *)t : "");
                rc = SQLITE_OK;
            } else if (rc == SQLITE_DONE) {
                rc = SQLITE_OK;
            }
        }
        if (rc == SQLITE_OK || !open_retry(o, rc))
            break;
        sqlite3_finalize(s);
        s = NULL;
    }
    if (rc != SQLITE_OK)
        snprintf(o->err, o->errlen, "%s: %s: %s", o->path, what, sqlite3_errmsg(o->db));
    sqlite3_finalize(s);
    return rc == SQLITE_OK ? 0 : PROV_ESTORE;
}

/* The schema version: 0 for a database without a schema_version table. */
static int schema_version(struct opener *o, long *version)
{
    static const char what[] = "reading the schema version";
    char v[32];
    int r;

    *version = 0;
    if ((r = open_query(o,
                        "SELECT count(*) FROM sqlite_master"
                        " WHERE type = 'table' AND name = 'schema_version'",
                        what, v, sizeof(v))) != 0)
        return r;
    if (strcmp(v, "0") == 0)
        return 0;
    if ((r = open_query(o, "SELECT coalesce(max(version), 0) FROM schema_version", what, v,
                        sizeof(v))) != 0)
        return r;
    if (parse_long(v, 0, LONG_MAX, version) != 0) {
        snprintf(o->err, o->errlen, "%s: unreadable schema version", o->path);
        return PROV_ESTORE;
    }
    return 0;
}

static int refuse_newer(struct opener *o, long version)
{
    snprintf(o->err, o->errlen,
             "%s: database schema version %ld is newer than this provd supports (%d);"
             " refusing to open it",
             o->path, version, SCHEMA_VERSION);
    return PROV_ESTORE;
}

/*
 * Brings the schema up to SCHEMA_VERSION, one migration per transaction.
 * Several connections may open a new file at once: each migration runs under
 * BEGIN IMMEDIATE and the version is read again once the write lock is held.
 */
static int migrate(struct opener *o)
{
    long version;
    int r;

    if ((r = schema_version(o, &version)) != 0)
        return r;
    while (version < SCHEMA_VERSION) {
        char sql[128], now[32];

        if ((r = open_exec(o, "BEGIN IMMEDIATE", true, "starting a migration")) != 0)
            return r;
        if ((r = open_exec(o,
                           "CREATE TABLE IF NOT EXISTS schema_version("
                           "version INTEGER PRIMARY KEY, applied TEXT NOT NULL)",
                           false, "creating schema_version")) != 0 ||
            (r = schema_version(o, &version)) != 0)
            goto fail;
        if (version >= SCHEMA_VERSION) {
            /* another connection got there first */
            if ((r = open_exec(o, "COMMIT", true, "committing")) != 0)
                goto fail;
            break;
        }
        /* both values are ours: a number and an RFC 3339 time */
        time_now_rfc3339(now, sizeof(now));
        snprintf(sql, sizeof(sql),
                 "INSERT INTO schema_version(version, applied) VALUES(%ld, '%s')", version + 1,
                 now);
        if ((r = open_exec(o, migrations[version], false, "applying a schema migration")) != 0 ||
            (r = open_exec(o, sql, false, "recording the schema version")) != 0 ||
            (r = open_exec(o, "COMMIT", true, "committing a schema migration")) != 0)
            goto fail;
        plog(LOG_INFO, "%s: schema migrated to version %ld", o->path, version + 1);
        version++;
    }
    if (version > SCHEMA_VERSION)
        return refuse_newer(o, version);
    return 0;
fail:
    if (!sqlite3_get_autocommit(o->db))
        (void)sqlite3_exec(o->db, "ROLLBACK", NULL, NULL, NULL);
    return r;
}

/* Switches to WAL; refuses a file system where SQLite cannot use it. */
static int set_wal(struct opener *o)
{
    char mode[32];
    int r;

    if ((r = open_query(o, "PRAGMA journal_mode=WAL", "enabling WAL", mode, sizeof(mode))) != 0)
        return r;
    if (!str_ieq(mode, "wal")) {
        snprintf(o->err, o->errlen, "%s: cannot use WAL journaling (journal mode stays %s)",
                 o->path, mode);
        return PROV_ESTORE;
    }
    return 0;
}

static int prepare_all(struct opener *o, struct sqlite_store *ss)
{
    for (int i = 0; i < S_COUNT; i++) {
        int rc;

        do {
            rc = sqlite3_prepare_v3(o->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
                                    &ss->stmt[i], NULL);
        } while (rc != SQLITE_OK && open_retry(o, rc));
        if (rc != SQLITE_OK) {
            snprintf(o->err, o->errlen, "%s: preparing statement %d: %s", o->path, i,
                     sqlite3_errmsg(o->db));
            return PROV_ESTORE;
        }
    }
    return 0;
}

int store_sqlite_open(const char *path, struct store **out, char *err, size_t errlen)
{
    struct sqlite_store *ss = NULL;
    struct opener o = {.path = path, .err = err, .errlen = errlen, .backoff_ms = 1};
    int r = PROV_EINTERNAL, rc, fd;

    *out = NULL;
    if (errlen > 0)
        err[0] = '\0';
    if (path == NULL || *path == '\0') {
        snprintf(err, errlen, "no store path");
        return PROV_EINVAL;
    }
    /*
     * The file holds enrollment keys: create it owner-only before SQLite does
     * (SQLite gives its -wal and -shm files the database file's mode). Only
     * when it does not exist yet: closing any descriptor of an open database
     * file drops every POSIX lock this process holds on it, which would let
     * another process (the sqlite3 CLI, a backup) believe it is the last user
     * and delete the WAL under our feet.
     */
    fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0) {
        close(fd);
    } else if (errno != EEXIST) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return PROV_ESTORE;
    }

    if ((ss = calloc(1, sizeof(*ss))) == NULL) {
        snprintf(err, errlen, "out of memory");
        return PROV_ENOMEM;
    }
    ss->base.ops = &sqlite_ops;
    r = PROV_ESTORE;
    rc = sqlite3_open_v2(path, &ss->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "%s: %s", path,
                 ss->db != NULL ? sqlite3_errmsg(ss->db) : sqlite3_errstr(rc));
        goto out;
    }
    o.db = ss->db;
    clock_gettime(CLOCK_MONOTONIC, &o.deadline);
    o.deadline.tv_sec += STORE_BUSY_TIMEOUT_MS / 1000;
    sqlite3_extended_result_codes(ss->db, 1);
    /*
     * Each worker has its own connection: wait for the others' write locks.
     * secure_delete=FAST zeroes replaced and deleted documents (they hold keys)
     * where that costs no extra I/O.
     */
    sqlite3_busy_timeout(ss->db, STORE_BUSY_TIMEOUT_MS);
    if ((r = set_wal(&o)) != 0 ||
        (r = open_exec(&o, "PRAGMA synchronous=FULL", true, "setting synchronous")) != 0 ||
        (r = open_exec(&o, "PRAGMA foreign_keys=ON", true, "enabling foreign keys")) != 0 ||
        (r = open_exec(&o, "PRAGMA secure_delete=FAST", true, "enabling secure delete")) != 0 ||
        /* a larger page cache (16 MB a connection): fewer reads of hot index pages */
        (r = open_exec(&o, "PRAGMA cache_size=-16384", true, "setting cache_size")) != 0 ||
        (r = migrate(&o)) != 0 || (r = prepare_all(&o, ss)) != 0)
        goto out;
    *out = &ss->base;
    ss = NULL;
    r = 0;
out:
    if (ss != NULL)
        sqlite_close(&ss->base);
    return r;
}
