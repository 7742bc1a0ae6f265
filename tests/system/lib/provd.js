'use strict';
/*
 * System-test harness for node:test files: a temporary directory, a test CA
 * and server certificate made with the openssl CLI, a real provd listening on
 * 127.0.0.N:443, and an SDK worker (lib/sdk_worker.js) that runs the Azure
 * SDKs in a child node process started with NODE_EXTRA_CA_CERTS (Node reads
 * that variable only at start-up, so the test process itself cannot use it).
 *
 * Environment: PROVD_SRC (repo root; default: three levels up) and
 * PROVD_BUILD_DIR (default $PROVD_SRC/build). PROVD_TEST_KEEP=1 keeps the
 * temporary directory even when every test passed.
 *
 * Works on Node 18 and 20: only APIs present in both.
 */
const assert = require('node:assert');
const { spawn, fork, execFileSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const https = require('node:https');
const os = require('node:os');
const path = require('node:path');
const net = require('node:net');
const tls = require('node:tls');

const SRC = process.env.PROVD_SRC || path.resolve(__dirname, '..', '..', '..');
const BUILD = process.env.PROVD_BUILD_DIR || path.join(SRC, 'build');
const BIN = {
    provd: path.join(BUILD, 'src', 'server', 'provd'),
    provctl: path.join(BUILD, 'src', 'cli', 'provctl'),
    provDevice: path.join(BUILD, 'src', 'cli', 'prov-device'),
};
const SCOPE = '0ne00TEST01';
const HUBS = ['hub1.example.test', 'hub2.example.test'];

function randomKey(bytes = 32)
{
    return crypto.randomBytes(bytes).toString('base64');
}

/* Device key of a member of a symmetric-key enrollment group. */
function deriveKey(groupKeyB64, registrationId)
{
    return crypto.createHmac('sha256', Buffer.from(groupKeyB64, 'base64'))
        .update(registrationId, 'utf8').digest('base64');
}

function sleep(ms)
{
    return new Promise((resolve) => setTimeout(resolve, ms));
}

/* Test CA plus a server certificate for ip (IP SAN: Node sends no SNI to IP literals). */
function makeCerts(dir, ip)
{
    const run = (args) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    fs.writeFileSync(path.join(dir, 'server.ext'),
        `subjectAltName=IP:${ip},DNS:localhost\nbasicConstraints=critical,CA:FALSE\n` +
        'keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n');
    run(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
        '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=provd system-test CA',
        '-addext', 'basicConstraints=critical,CA:TRUE',
        '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
    run(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
        '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=localhost']);
    run(['x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key',
        '-set_serial', '0x' + crypto.randomBytes(8).toString('hex'), '-days', '2',
        '-extfile', 'server.ext', '-out', 'server.pem']);
    return {
        ca: path.join(dir, 'ca.pem'),
        cert: path.join(dir, 'server.pem'),
        key: path.join(dir, 'server.key'),
    };
}

/* Resolves once ip:443 completes a TLS handshake trusted by ca; rejects after timeoutMs. */
async function waitTls(ip, caPem, timeoutMs, isDead)
{
    const deadline = Date.now() + timeoutMs;
    let last = null;
    while (Date.now() < deadline) {
        if (isDead())
            throw new Error('provd exited before it accepted TLS connections');
        try {
            await new Promise((resolve, reject) => {
                const s = tls.connect({ host: ip, port: 443, ca: caPem, timeout: 1000 }, () => {
                    s.destroy();
                    resolve();
                });
                s.on('error', reject);
                s.on('timeout', () => { s.destroy(); reject(new Error('TLS handshake timeout')); });
            });
            return;
        } catch (e) {
            last = e;
        }
        await sleep(100);
    }
    throw new Error(`provd did not accept TLS on ${ip}:443 within ${timeoutMs} ms: ` +
        (last ? last.message : 'no attempt'));
}

/*
 * Address claims. Each test file has its own preferred 127.0.0.N. provd binds
 * with SO_REUSEPORT, so a second provd on the same address (say, a colleague
 * running the same test file at the same time) would share the port and steal
 * connections. A claim is a directory LOCKS/<ip> made atomically with mkdir,
 * holding the owner's pid; a claim whose owner is dead is taken over. A free
 * address must also refuse TCP connections on 443. When the preferred address
 * is taken, 127.0.0.200-254 are tried.
 */
const LOCKS = path.join(os.tmpdir(), 'provd-systest-locks');

function pidAlive(pid)
{
    try {
        process.kill(pid, 0);
        return true;
    } catch (e) {
        return e.code === 'EPERM';
    }
}

function tryClaim(ip)
{
    const dir = path.join(LOCKS, ip);
    for (let attempt = 0; attempt < 2; attempt++) {
        try {
            fs.mkdirSync(dir);
            fs.writeFileSync(path.join(dir, 'pid'), String(process.pid));
            return dir;
        } catch (e) {
            if (e.code !== 'EEXIST')
                throw e;
        }
        let pid = NaN;
        try {
            pid = Number(fs.readFileSync(path.join(dir, 'pid'), 'utf8'));
        } catch (_) {
            /* being created right now, or left half-made */
        }
        if (Number.isNaN(pid) || pidAlive(pid))
            return null;
        fs.rmSync(dir, { recursive: true, force: true });
    }
    return null;
}

function portOpen(ip)
{
    return new Promise((resolve) => {
        const s = net.connect({ host: ip, port: 443 });
        s.setTimeout(1000);
        s.on('connect', () => { s.destroy(); resolve(true); });
        s.on('timeout', () => { s.destroy(); resolve(true); });
        s.on('error', () => resolve(false));
    });
}

async function claimAddress(preferred)
{
    fs.mkdirSync(LOCKS, { recursive: true });
    const candidates = [preferred];
    for (let n = 200; n <= 254; n++)
        candidates.push(`127.0.0.${n}`);
    for (const ip of candidates) {
        const dir = tryClaim(ip);
        if (dir === null)
            continue;
        if (await portOpen(ip)) {
            fs.rmSync(dir, { recursive: true, force: true });
            continue;
        }
        return { ip, release: () => fs.rmSync(dir, { recursive: true, force: true }) };
    }
    throw new Error(`no free test address (tried ${preferred} and 127.0.0.200-254)`);
}

class Provd {
    /*
     * opts.ip: this test file's own 127.0.0.N (another is used when it is
     * taken: read this.ip after start()). opts.extraArgs: more provd flags.
     * opts.mqtt: also serve MQTT on this.ip:8883 (--mqtt-listen; see mqttHost).
     */
    constructor(opts)
    {
        this.ip = opts.ip;
        this.name = opts.name || 'provd';
        this.extraArgs = opts.extraArgs || [];
        this.mqtt = Boolean(opts.mqtt);
        this.scope = SCOPE;
        this.hubs = HUBS.slice();
        this.ownerKey = randomKey(32);
        this.readKey = randomKey(32);
        this.proc = null;
        this.exit = null;
        this.failed = false;
        this.stderrMark = 0;
    }

    async start()
    {
        if (!fs.existsSync(BIN.provd))
            throw new Error(`provd binary not found at ${BIN.provd} (set PROVD_BUILD_DIR)`);
        const claim = await claimAddress(this.ip);
        this.ip = claim.ip;
        this.releaseAddress = claim.release;
        this.dir = fs.mkdtempSync(path.join(os.tmpdir(), `provd-st-${this.name}-`));
        this.dataDir = path.join(this.dir, 'data');
        fs.mkdirSync(this.dataDir);
        this.certs = makeCerts(this.dir, this.ip);
        this.caPem = fs.readFileSync(this.certs.ca);
        this.stderrPath = path.join(this.dir, 'provd.stderr');
        const errFd = fs.openSync(this.stderrPath, 'w');
        const args = [
            '--listen', `${this.ip}:443`,
            '--tls-cert', this.certs.cert, '--tls-key', this.certs.key,
            '--data-dir', this.dataDir,
            '--id-scope', this.scope,
            '--policy', `provisioningserviceowner=${this.ownerKey}`,
            '--policy', `readonly=${this.readKey}:EnrollmentRead,RegistrationStatusRead`,
            '--retry-after', '1', '--workers', '2',
        ];
        for (const h of this.hubs)
            args.push('--hub', h);
        if (this.mqtt)
            args.push('--mqtt-listen', `${this.ip}:8883`);
        args.push(...this.extraArgs);
        this.args = args;
        this.proc = spawn(BIN.provd, args, { stdio: ['ignore', errFd, errFd], cwd: this.dir });
        fs.closeSync(errFd);
        this.exitPromise = new Promise((resolve) => {
            this.proc.on('exit', (code, signal) => {
                this.exit = { code, signal };
                resolve(this.exit);
            });
            this.proc.on('error', (e) => {
                this.exit = { code: null, signal: null, error: e };
                resolve(this.exit);
            });
        });
        try {
            await waitTls(this.ip, this.caPem, 10000, () => this.exit !== null);
        } catch (e) {
            this.failed = true;
            if (this.exit === null)
                this.proc.kill('SIGKILL');
            await this.exitPromise;
            e.message += `\nprovd ${JSON.stringify(this.exit)}; stderr:\n${this.stderr()}`;
            throw e;
        }
        return this;
    }

    /* The device MQTT transport's provisioning host: the SDK accepts host:port. */
    get mqttHost()
    {
        return `${this.ip}:8883`;
    }

    get dbPath()
    {
        return path.join(this.dataDir, 'provd.db');
    }

    stderr()
    {
        try {
            return fs.readFileSync(this.stderrPath, 'utf8');
        } catch (e) {
            return `(no stderr: ${e.message})`;
        }
    }

    /* stderr written since the previous call (for a failing test's report). */
    stderrSinceMark(limit = 8192)
    {
        const all = this.stderr();
        let s = all.slice(this.stderrMark);
        this.stderrMark = all.length;
        if (s.length > limit)
            s = '...' + s.slice(s.length - limit);
        return s;
    }

    /* SIGTERM and wait; resolves {code, signal}. Kills with SIGKILL after timeoutMs. */
    async stop(timeoutMs = 15000)
    {
        if (this.proc === null)
            return { code: 0, signal: null };
        if (this.exit === null) {
            this.proc.kill('SIGTERM');
            const t = setTimeout(() => {
                if (this.exit === null)
                    this.proc.kill('SIGKILL');
            }, timeoutMs);
            await this.exitPromise;
            clearTimeout(t);
        }
        return this.exit;
    }

    /*
     * Opens two client connections and leaves them open: one idle after a
     * completed keep-alive request, one in the middle of a request's headers.
     * Resolves an array of sockets.
     */
    async openIdleConnections()
    {
        const open = (payload, waitReply) => new Promise((resolve, reject) => {
            /* a server that does not answer must not hang the test */
            const timer = setTimeout(() => resolve(s), 5000);
            const done = () => {
                clearTimeout(timer);
                resolve(s);
            };
            const s = tls.connect({ host: this.ip, port: 443, ca: this.caPem }, () => {
                s.write(payload);
                if (!waitReply)
                    done();
            });
            let got = '';
            s.on('data', (d) => {
                got += d.toString();
                if (waitReply && /\r\n\r\n/.test(got))
                    done();
            });
            s.on('error', (e) => {
                clearTimeout(timer);
                reject(e);
            });
        });
        return [
            await open(`GET /enrollments/x?api-version=2021-10-01 HTTP/1.1\r\nHost: ${this.ip}\r\n` +
                'Connection: keep-alive\r\n\r\n', true),
            await open(`PUT /${this.scope}/registrations/x/register HTTP/1.1\r\nHost: ${this.ip}\r\n` +
                'Content-Length: 100\r\n', false),
        ];
    }

    /*
     * Stops provd with clients still connected (as a daemon is in real life) and
     * asserts a clean exit 0 (ASan leak reports make it non-zero).
     */
    async stopAndCheck()
    {
        let socks = [];
        if (this.exit === null)
            socks = await this.openIdleConnections();
        const ex = await this.stop();
        for (const s of socks)
            s.destroy();
        if (ex.code !== 0) {
            this.failed = true;
            assert.fail(`provd exited ${JSON.stringify(ex)} after SIGTERM; stderr:\n` +
                this.stderrSinceMark(16384));
        }
    }

    /* Removes the temporary directory unless something failed (then its path is kept). */
    cleanup()
    {
        if (this.proc !== null && this.exit === null)
            this.proc.kill('SIGKILL');
        if (this.releaseAddress) {
            this.releaseAddress();
            this.releaseAddress = null;
        }
        if (this.dir && !this.failed && process.env.PROVD_TEST_KEEP !== '1')
            fs.rmSync(this.dir, { recursive: true, force: true });
    }

    connString(policy = 'provisioningserviceowner', key = null)
    {
        if (key === null)
            key = policy === 'readonly' ? this.readKey : this.ownerKey;
        return `HostName=${this.ip};SharedAccessKeyName=${policy};SharedAccessKey=${key}`;
    }

    /* Authorization value for the service and admin APIs (sr = the host, as the SDK signs). */
    serviceSas(policy = 'provisioningserviceowner', key = null, ttlSeconds = 3600)
    {
        if (key === null)
            key = policy === 'readonly' ? this.readKey : this.ownerKey;
        const se = Math.floor(Date.now() / 1000) + ttlSeconds;
        const sig = crypto.createHmac('sha256', Buffer.from(key, 'base64'))
            .update(`${this.ip}\n${se}`, 'utf8').digest('base64');
        return `SharedAccessSignature sr=${this.ip}&sig=${encodeURIComponent(sig)}` +
            `&skn=${policy}&se=${se}`;
    }

    /*
     * One HTTPS request from the test process (trusting the test CA). opts:
     * body (object: sent as JSON; string: as is), headers, auth (true: the
     * owner's SAS), cert/key (a TLS client certificate). Resolves {status,
     * headers, text, json} (json undefined when the body is not JSON).
     */
    request(method, urlPath, opts = {})
    {
        const headers = Object.assign({}, opts.headers || {});
        let payload = null;
        if (opts.body !== undefined) {
            payload = typeof opts.body === 'string' ? opts.body : JSON.stringify(opts.body);
            headers['Content-Type'] = 'application/json; charset=utf-8';
            headers['Content-Length'] = Buffer.byteLength(payload);
        }
        if (opts.auth)
            headers.Authorization = this.serviceSas();
        return new Promise((resolve, reject) => {
            const rq = https.request({
                host: this.ip, port: 443, method, path: urlPath, headers, ca: this.caPem,
                cert: opts.cert, key: opts.key, agent: false, timeout: 20000,
            }, (res) => {
                const chunks = [];
                res.on('data', (d) => chunks.push(d));
                res.on('end', () => {
                    const text = Buffer.concat(chunks).toString('utf8');
                    let json;
                    try {
                        json = JSON.parse(text);
                    } catch (_) {
                        json = undefined;
                    }
                    resolve({ status: res.statusCode, headers: res.headers, text, json });
                });
                res.on('error', reject);
            });
            rq.on('timeout', () => rq.destroy(new Error(`${method} ${urlPath}: timeout`)));
            rq.on('error', reject);
            if (payload !== null)
                rq.write(payload);
            rq.end();
        });
    }

    /* Rows of the sqlite3 CLI for sql (tab separated), as one string. */
    sql(query)
    {
        return execFileSync('sqlite3', ['-separator', '\t', this.dbPath, query], { encoding: 'utf8' });
    }

    /*
     * Wraps a test body: on failure, appends provd's stderr since the last mark
     * (and the temp dir path) to the error and keeps the temp dir. The returned
     * function takes no parameter: Node 18's it() treats a one-parameter
     * function as callback style.
     */
    wrap(fn)
    {
        return async () => {
            this.stderrSinceMark(0);
            try {
                await fn();
            } catch (e) {
                this.failed = true;
                const tail = this.stderrSinceMark();
                const note = `\n--- provd stderr during this test (dir ${this.dir}) ---\n${tail}`;
                if (e && typeof e === 'object') {
                    try {
                        e.message = String(e.message) + note;
                    } catch (_) {
                        /* read-only message: leave it */
                    }
                }
                throw e;
            }
        };
    }
}

/*
 * The SDK worker: one child node process per test file, started with
 * NODE_EXTRA_CA_CERTS=ca.pem, that runs SDK calls on request over the fork IPC
 * channel. Its stdout and stderr are captured (the test's own stdout carries TAP).
 */
class SdkWorker {
    constructor(caFile)
    {
        this.caFile = caFile;
        this.seq = 0;
        this.pending = new Map();
        this.output = '';
        this.exited = false;
    }

    start()
    {
        const env = Object.assign({}, process.env, { NODE_EXTRA_CA_CERTS: this.caFile });
        delete env.NODE_OPTIONS;
        this.child = fork(path.join(__dirname, 'sdk_worker.js'), [], {
            env, execArgv: [], stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
        });
        const keep = (d) => {
            this.output += d.toString();
            if (this.output.length > 65536)
                this.output = this.output.slice(-32768);
        };
        this.child.stdout.on('data', keep);
        this.child.stderr.on('data', keep);
        this.child.on('message', (m) => {
            const p = this.pending.get(m.id);
            if (p === undefined)
                return;
            this.pending.delete(m.id);
            clearTimeout(p.timer);
            p.resolve(m);
        });
        this.child.on('exit', (code, signal) => {
            this.exited = true;
            for (const p of this.pending.values()) {
                clearTimeout(p.timer);
                p.reject(new Error(`SDK worker exited (${code}, ${signal}):\n${this.output}`));
            }
            this.pending.clear();
        });
        return this.call('ping', {});
    }

    /* Runs op in the worker; resolves {ok, result...} or {ok:false, error}. */
    call(op, args, timeoutMs = 60000)
    {
        if (this.exited)
            return Promise.reject(new Error(`SDK worker is gone:\n${this.output}`));
        const id = ++this.seq;
        return new Promise((resolve, reject) => {
            const timer = setTimeout(() => {
                this.pending.delete(id);
                reject(new Error(`SDK call ${op} timed out after ${timeoutMs} ms`));
            }, timeoutMs);
            this.pending.set(id, { resolve, reject, timer });
            this.child.send({ id, op, args });
        });
    }

    close()
    {
        if (this.child && !this.exited) {
            this.child.kill('SIGTERM');
        }
    }
}

/*
 * Convenience wrappers. Each resolves the worker's answer:
 * success {ok:true, result, status, headers}; failure {ok:false, error:{name,
 * message, statusCode, body}}.
 */
class Sdk {
    constructor(server)
    {
        this.server = server;
        this.worker = new SdkWorker(server.certs.ca);
    }

    async start()
    {
        const r = await this.worker.start();
        assert.ok(r.ok, 'SDK worker did not start');
        return this;
    }

    close()
    {
        this.worker.close();
    }

    /*
     * Registers a symmetric-key device through the HTTP transport, or MQTT with
     * opts.transport 'mqtt' (provd started with mqtt: true).
     */
    register(registrationId, key, opts = {})
    {
        return this.worker.call('register', {
            host: opts.host || this.defaultHost(opts),
            scope: opts.scope || this.server.scope,
            registrationId, key, payload: opts.payload, transport: opts.transport,
        }, opts.timeoutMs || 60000);
    }

    defaultHost(opts)
    {
        return opts.transport === 'mqtt' ? this.server.mqttHost : this.server.ip;
    }

    /*
     * Registers an X.509 device through the HTTP transport with
     * azure-iot-security-x509: cert is the PEM it presents (leaf, optionally
     * followed by intermediates), key its private key. opts.newConnections:
     * a connection per request with TLS sessions resumed (Node 18's default
     * agent); the answer then has tls: {handshakes, resumed}. opts.transport
     * 'mqtt': through the MQTT transport instead.
     */
    registerX509(registrationId, cert, key, opts = {})
    {
        return this.worker.call('registerX509', {
            host: opts.host || this.defaultHost(opts),
            scope: opts.scope || this.server.scope,
            registrationId, cert, key, payload: opts.payload, newConnections: opts.newConnections,
            transport: opts.transport,
        }, opts.timeoutMs || 60000);
    }

    /*
     * TPM (tpm: a started Swtpm): {endorsementKey, storageRootKey, registrationId}
     * as azure-iot-security-tpm reads them (base64 TPM2B_PUBLIC; the default
     * registration id unless opts.registrationId).
     */
    tpmKeys(tpm, opts = {})
    {
        return this.worker.call('tpmKeys', {
            tpmHost: tpm.host, tpmPort: tpm.port, registrationId: opts.registrationId,
        });
    }

    /*
     * Registers with the TPM through the HTTP transport (registrationId null:
     * the SDK's default from the EK). opts.sign: strings the TPM signs with
     * its identity key afterwards (answer.signatures, base64); the answer also
     * has sasSignatures, what the TPM signed during the registration.
     */
    registerTpm(registrationId, tpm, opts = {})
    {
        return this.worker.call('registerTpm', {
            host: opts.host || this.server.ip, scope: opts.scope || this.server.scope,
            registrationId, tpmHost: tpm.host, tpmPort: tpm.port, payload: opts.payload,
            sign: opts.sign,
        }, opts.timeoutMs || 90000);
    }

    /* signWithIdentity of each string with a new TPM client; result: base64 signatures. */
    tpmSign(tpm, data)
    {
        return this.worker.call('tpmSign', { tpmHost: tpm.host, tpmPort: tpm.port, data });
    }

    /* Calls ProvisioningServiceClient#method(...args, callback). */
    service(method, args, opts = {})
    {
        return this.worker.call('service', {
            conn: opts.conn || this.server.connString(), method, args,
        });
    }

    /* Creates a query; resolves a handle for queryNext. kind: enrollments|groups|registrations. */
    async query(kind, opts = {})
    {
        const r = await this.worker.call('query', {
            conn: opts.conn || this.server.connString(), kind,
            querySpec: opts.querySpec || { query: 'SELECT *' },
            groupId: opts.groupId, pageSize: opts.pageSize,
        });
        assert.ok(r.ok, 'query creation failed: ' + JSON.stringify(r));
        return r.handle;
    }

    /* Next page: mode 'token' uses next(continuationToken, cb), 'callback' uses next(cb). */
    queryNext(handle, mode = 'token')
    {
        return this.worker.call('queryNext', { handle, mode });
    }

    /* Every item of a query, page by page; also returns the page count. */
    async queryAll(kind, opts = {})
    {
        const h = await this.query(kind, opts);
        const items = [];
        let pages = 0;
        for (;;) {
            const r = await this.queryNext(h, opts.mode || 'token');
            assert.ok(r.ok, `query page ${pages + 1} failed: ${JSON.stringify(r.error)}`);
            pages++;
            items.push(...r.result);
            if (!r.hasMoreResults)
                break;
            assert.ok(pages < 1000, 'query never ends');
        }
        return { items, pages };
    }
}

/*
 * The test PKI of lib/pki.sh (openssl CLI), in dir. Certificate NAME has
 * NAME.pem, NAME.key and NAME.chain.pem (itself and its issuers below the
 * root). opts.validity: 'valid' (default), 'expired' or 'future'; opts.keyType:
 * 'ec' (P-256, default) or 'rsa' (2048).
 */
class Pki {
    constructor(dir)
    {
        this.dir = dir;
        fs.mkdirSync(dir, { recursive: true });
    }

    run(cmd, args, opts = {})
    {
        const env = Object.assign({}, process.env, {
            PKI_VALIDITY: opts.validity || 'valid', PKI_KEY: opts.keyType || 'ec',
        });
        try {
            return execFileSync('bash', [path.join(__dirname, 'pki.sh'), this.dir, cmd, ...args],
                { env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
        } catch (e) {
            throw new Error(`pki.sh ${cmd} ${args.join(' ')} failed: ${e.stderr || e.message}`);
        }
    }

    root(name, cn, opts)
    {
        this.run('root', [name, cn], opts);
        return this;
    }

    ca(name, issuer, cn, opts)
    {
        this.run('ca', [name, issuer, cn], opts);
        return this;
    }

    notca(name, issuer, cn, opts)
    {
        this.run('notca', [name, issuer, cn], opts);
        return this;
    }

    leaf(name, issuer, cn, opts)
    {
        this.run('leaf', [name, issuer, cn], opts);
        return this;
    }

    file(name, ext = 'pem')
    {
        return path.join(this.dir, `${name}.${ext}`);
    }

    pem(name)
    {
        return fs.readFileSync(this.file(name), 'utf8');
    }

    chain(name)
    {
        return fs.readFileSync(this.file(name, 'chain.pem'), 'utf8');
    }

    key(name)
    {
        return fs.readFileSync(this.file(name, 'key'), 'utf8');
    }

    /* {sha1, sha256} thumbprints: upper-case hex without separators (Node's own parser). */
    thumbprints(name)
    {
        const x = new crypto.X509Certificate(this.pem(name));
        return {
            sha1: x.fingerprint.replace(/:/g, '').toUpperCase(),
            sha256: x.fingerprint256.replace(/:/g, '').toUpperCase(),
        };
    }
}

/*
 * A software TPM for the SDK: swtpm (TPM 2.0, fresh state in dir, so a new
 * endorsement seed) on ip with two kernel-chosen consecutive ports, and
 * lib/mssim_adapter.js in this process in front of it, since tss.js speaks the
 * MS simulator protocol. host/port: where the SDK's `new Tpm(true, host,
 * port)` connects. Swtpm.available() is false when swtpm is not installed.
 */
class Swtpm {
    constructor(ip, dir)
    {
        this.ip = ip;
        this.host = ip;
        this.dir = dir;
        this.proc = null;
        this.adapter = null;
        this.exit = null;
    }

    static available()
    {
        try {
            execFileSync('swtpm', ['--version'], { stdio: 'ignore' });
            return true;
        } catch (_) {
            return false;
        }
    }

    /* A port p on ip with p and p+1 free at the time of the check. */
    static async freePortPair(ip)
    {
        const bind = (port) => new Promise((resolve) => {
            const srv = net.createServer();
            srv.once('error', () => resolve(null));
            srv.listen({ host: ip, port, exclusive: true }, () => resolve(srv));
        });
        const close = (srv) => new Promise((resolve) => srv.close(() => resolve()));
        for (let i = 0; i < 50; i++) {
            const a = await bind(0);
            if (a === null)
                continue;
            const p = a.address().port;
            const b = p < 65535 ? await bind(p + 1) : null;
            await close(a);
            if (b !== null) {
                await close(b);
                return p;
            }
        }
        throw new Error(`no two consecutive free ports on ${ip}`);
    }

    async start()
    {
        const { MssimAdapter } = require('./mssim_adapter.js');
        fs.mkdirSync(this.dir, { recursive: true });
        let last = '';
        for (let attempt = 0; attempt < 3; attempt++) {
            const port = await Swtpm.freePortPair(this.ip);
            const log = path.join(this.dir, 'swtpm.log');
            const out = fs.openSync(path.join(this.dir, 'swtpm.out'), 'w');
            this.exit = null;
            this.proc = spawn('swtpm', ['socket', '--tpm2', '--tpmstate', `dir=${this.dir}`,
                '--server', `type=tcp,port=${port},bindaddr=${this.ip}`,
                '--ctrl', `type=tcp,port=${port + 1},bindaddr=${this.ip}`,
                '--flags', 'not-need-init,startup-clear', '--log', `file=${log}`],
            { stdio: ['ignore', out, out] });
            fs.closeSync(out);
            this.exitPromise = new Promise((resolve) => {
                this.proc.on('exit', (code, signal) => resolve(this.exit = { code, signal }));
                this.proc.on('error', (e) => resolve(this.exit = { error: e.message }));
            });
            this.swtpmPort = port;
            for (let i = 0; i < 50 && this.exit === null; i++) {
                try {
                    this.adapter = await new MssimAdapter({
                        ip: this.ip, swtpmHost: this.ip, swtpmPort: port,
                    }).start();
                    this.port = this.adapter.port;
                    return this;
                } catch (e) {
                    last = e.message;
                    this.adapter = null;
                }
                await sleep(100);
            }
            await this.stop();
            last += `; swtpm ${JSON.stringify(this.exit)}: ` +
                fs.readFileSync(path.join(this.dir, 'swtpm.out'), 'utf8');
        }
        throw new Error(`swtpm did not start on ${this.ip}: ${last}`);
    }

    async stop()
    {
        if (this.adapter !== null) {
            await this.adapter.close();
            this.adapter = null;
        }
        if (this.proc !== null && this.exit === null) {
            this.proc.kill('SIGTERM');
            const t = setTimeout(() => {
                if (this.exit === null)
                    this.proc.kill('SIGKILL');
            }, 5000);
            await this.exitPromise;
            clearTimeout(t);
        }
    }
}

/* Asserts a worker answer is a success and returns its result. */
function ok(r, what)
{
    if (!r.ok)
        assert.fail(`${what || 'SDK call'} failed: ${JSON.stringify(r.error)}`);
    return r.result;
}

/* Asserts a worker answer is a failure with the given HTTP status. */
function failsWith(r, status, what)
{
    if (r.ok)
        assert.fail(`${what || 'SDK call'} succeeded, expected HTTP ${status}: ${JSON.stringify(r.result)}`);
    assert.strictEqual(r.error.statusCode, status,
        `${what || 'SDK call'}: expected HTTP ${status}, got ${JSON.stringify(r.error)}`);
    return r.error;
}

module.exports = {
    SRC, BUILD, BIN, SCOPE, HUBS, Provd, Sdk, SdkWorker, Pki, Swtpm, randomKey, deriveKey, makeCerts,
    sleep, ok, failsWith,
};
