'use strict';
/*
 * Child process started by lib/provd.js (SdkWorker) with NODE_EXTRA_CA_CERTS
 * pointing at the test CA. Runs the unmodified Azure IoT SDKs on request:
 * messages {id, op, args} in, {id, ok, ...} out over the fork IPC channel.
 * Always uses the SDKs' callback forms (the service client's promise form of
 * runBulkEnrollmentOperation never resolves, and Query.next() without an
 * argument drops the continuation token).
 */
const https = require('node:https');
const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');
const { Http: DeviceHttp } = require('azure-iot-provisioning-device-http');
const { Mqtt: DeviceMqtt } = require('azure-iot-provisioning-device-mqtt');
const { SymmetricKeySecurityClient } = require('azure-iot-security-symmetric-key');
const { X509Security } = require('azure-iot-security-x509');
const { TpmSecurityClient } = require('azure-iot-security-tpm');
const { Tpm } = require('tss.js');
const { ProvisioningServiceClient } = require('azure-iot-provisioning-service');

const services = new Map();
const queries = new Map();
let nextHandle = 1;

function serviceClient(conn)
{
    let c = services.get(conn);
    if (c === undefined) {
        c = ProvisioningServiceClient.fromConnectionString(conn);
        services.set(conn, c);
    }
    return c;
}

function parseMaybeJson(v)
{
    if (typeof v !== 'string')
        return v;
    try {
        return JSON.parse(v);
    } catch (_) {
        return v;
    }
}

/* MQTT transport errors carry {topic, payload}; the status is in $dps/registrations/res/{status}/. */
function mqttStatus(resp)
{
    if (!resp || typeof resp.topic !== 'string')
        return undefined;
    const m = /^\$dps\/registrations\/res\/(\d+)\//.exec(resp.topic);
    return m ? Number(m[1]) : undefined;
}

/* The device transport an op asks for: HTTP (default) or MQTT (args.transport 'mqtt'). */
function deviceTransport(args)
{
    return args.transport === 'mqtt' ? new DeviceMqtt() : new DeviceHttp();
}

function serializeError(e)
{
    if (!(e instanceof Error))
        return { name: typeof e, message: String(e) };
    const resp = e.response || e.transportObject;
    let body = e.responseBody !== undefined ? e.responseBody : e.result;
    body = parseMaybeJson(body);
    return {
        name: e.name,
        type: e.constructor ? e.constructor.name : undefined,
        message: e.message,
        code: e.code,
        statusCode: resp && typeof resp.statusCode === 'number' ? resp.statusCode
            : mqttStatus(resp),
        headers: resp && resp.headers ? resp.headers : undefined,
        body,
    };
}

/*
 * TPM: azure-iot-security-tpm's TpmSecurityClient over tss.js in simulator
 * mode (mssim protocol at args.tpmHost:args.tpmPort, lib/mssim_adapter.js in
 * front of swtpm). The security client never closes its TPM connection, so
 * the op closes it when done. Without args.registrationId the SDK computes
 * the default one from the EK.
 */
function tpmClient(args)
{
    const tpm = new Tpm(true, args.tpmHost, args.tpmPort);
    const sec = new TpmSecurityClient(args.registrationId || undefined, tpm);
    return { tpm, sec };
}

function call(fn)
{
    return new Promise((resolve, reject) => fn((err, v) => (err ? reject(err) : resolve(v))));
}

/* signWithIdentity of each string in data, base64. */
async function tpmSignAll(sec, data)
{
    const out = [];
    for (const d of data || []) {
        const sig = await call((cb) => sec.signWithIdentity(Buffer.from(d, 'utf8'), cb));
        out.push(sig.toString('base64'));
    }
    return out;
}

/* Runs fn(sec) with a fresh TPM client; done({ok, result}) and the TPM connection closed. */
function withTpm(args, done, fn)
{
    const { tpm, sec } = tpmClient(args);
    fn(sec).then((result) => {
        tpm.close();
        done({ ok: true, result });
    }, (err) => {
        tpm.close();
        done({ ok: false, error: serializeError(err) });
    });
}

function responseInfo(resp)
{
    if (!resp || typeof resp !== 'object')
        return {};
    return { status: resp.statusCode, headers: resp.headers };
}

/*
 * Node 18's default https agent opens a connection per request and resumes
 * cached TLS sessions; Node 20's keeps connections alive. newConnections
 * gives the Node 18 behaviour on both: one agent without keep-alive, kept for
 * the worker's life so that its session cache carries over between calls.
 * It counts the handshakes that resumed a session.
 */
class CountingAgent extends https.Agent {
    constructor()
    {
        super({ keepAlive: false });
        this.handshakes = 0;
        this.resumed = 0;
    }

    createConnection(options, cb)
    {
        const s = super.createConnection(options, cb);
        s.once('secureConnect', () => {
            this.handshakes++;
            if (s.isSessionReused())
                this.resumed++;
        });
        return s;
    }
}

const defaultAgent = https.globalAgent;
let newConnAgent = null;

function runRegister(client, args, done)
{
    if (args.newConnections) {
        if (newConnAgent === null)
            newConnAgent = new CountingAgent();
        /* https.request reads https.globalAgent at each call; calls run one at a time */
        https.globalAgent = newConnAgent;
        const inner = done;
        const before = { handshakes: newConnAgent.handshakes, resumed: newConnAgent.resumed };
        done = (r) => {
            https.globalAgent = defaultAgent;
            r.tls = {
                handshakes: newConnAgent.handshakes - before.handshakes,
                resumed: newConnAgent.resumed - before.resumed,
            };
            inner(r);
        };
    }
    if (args.payload !== undefined)
        client.setProvisioningPayload(args.payload);
    client.register((err, result) => {
        if (err)
            done({ ok: false, error: serializeError(err) });
        else
            done({ ok: true, result });
    });
}

const ops = {
    ping(args, done)
    {
        done({ ok: true, ca: process.env.NODE_EXTRA_CA_CERTS, node: process.version });
    },

    register(args, done)
    {
        const sec = new SymmetricKeySecurityClient(args.registrationId, args.key);
        const client = ProvisioningDeviceClient.create(args.host, args.scope, deviceTransport(args),
            sec);
        runRegister(client, args, done);
    },

    /*
     * X.509: args.cert is the PEM the device presents (its leaf, optionally
     * followed by intermediates), args.key its private key (PEM).
     */
    registerX509(args, done)
    {
        const sec = new X509Security(args.registrationId, { cert: args.cert, key: args.key });
        const client = ProvisioningDeviceClient.create(args.host, args.scope, deviceTransport(args),
            sec);
        runRegister(client, args, done);
    },

    /* The TPM's EK and SRK (base64 TPM2B_PUBLIC) and the registration id the SDK uses. */
    tpmKeys(args, done)
    {
        withTpm(args, done, async (sec) => ({
            endorsementKey: (await call((cb) => sec.getEndorsementKey(cb))).toString('base64'),
            storageRootKey: (await call((cb) => sec.getStorageRootKey(cb))).toString('base64'),
            registrationId: await call((cb) => sec.getRegistrationId(cb)),
        }));
    },

    /*
     * Registers through the HTTP transport with the TPM. The answer adds
     * sasSignatures: what the SDK had the TPM sign during the registration
     * ({data, sig} base64, recorded around signWithIdentity: the SAS of the
     * registration key K), and signatures: args.sign (strings; null stands
     * for the data of that SAS) signed with the identity key the TPM holds
     * afterwards (the hub key).
     */
    registerTpm(args, done)
    {
        const { tpm, sec } = tpmClient(args);
        const sasSignatures = [];
        const sign = sec.signWithIdentity.bind(sec);
        let recording = true;
        sec.signWithIdentity = (data, cb) => sign(data, (err, sig) => {
            if (!err && recording)
                sasSignatures.push({ data: data.toString('base64'), sig: sig.toString('base64') });
            cb(err, sig);
        });
        const client = ProvisioningDeviceClient.create(args.host, args.scope, new DeviceHttp(), sec);
        runRegister(client, args, (r) => {
            recording = false;
            r.sasSignatures = sasSignatures;
            if (!r.ok) {
                tpm.close();
                done(r);
                return;
            }
            const sasData = sasSignatures.length > 0 ?
                Buffer.from(sasSignatures[0].data, 'base64').toString('utf8') : '';
            const toSign = (args.sign || []).map((d) => (d === null ? sasData : d));
            tpmSignAll(sec, toSign).then((signatures) => {
                tpm.close();
                done(Object.assign(r, { signatures }));
            }, (err) => {
                tpm.close();
                done({ ok: false, error: Object.assign(serializeError(err), { afterRegister: true }) });
            });
        });
    },

    /* signWithIdentity with a new client (the identity key persisted in the TPM). */
    tpmSign(args, done)
    {
        withTpm(args, done, (sec) => tpmSignAll(sec, args.data));
    },

    service(args, done)
    {
        const c = serviceClient(args.conn);
        const fn = c[args.method];
        if (typeof fn !== 'function') {
            done({ ok: false, error: { name: 'TypeError', message: 'no method ' + args.method } });
            return;
        }
        fn.call(c, ...(args.args || []), (err, result, resp) => {
            if (err)
                done({ ok: false, error: serializeError(err) });
            else
                done(Object.assign({ ok: true, result: result === undefined ? null : result },
                    responseInfo(resp)));
        });
    },

    query(args, done)
    {
        const c = serviceClient(args.conn);
        let q;
        if (args.kind === 'enrollments')
            q = c.createIndividualEnrollmentQuery(args.querySpec, args.pageSize);
        else if (args.kind === 'groups')
            q = c.createEnrollmentGroupQuery(args.querySpec, args.pageSize);
        else if (args.kind === 'registrations')
            q = c.createEnrollmentGroupDeviceRegistrationStateQuery(args.querySpec, args.groupId,
                args.pageSize);
        else
            throw new Error('unknown query kind ' + args.kind);
        const handle = nextHandle++;
        queries.set(handle, q);
        done({ ok: true, handle });
    },

    queryNext(args, done)
    {
        const q = queries.get(args.handle);
        const cb = (err, result, resp) => {
            if (err) {
                done({ ok: false, error: serializeError(err) });
                return;
            }
            done(Object.assign({
                ok: true, result, continuationToken: q.continuationToken === undefined ? null :
                    q.continuationToken, hasMoreResults: q.hasMoreResults,
            }, responseInfo(resp)));
        };
        if (args.mode === 'callback')
            q.next(cb);
        else
            q.next(q.continuationToken, cb);
    },
};

process.on('message', (m) => {
    const reply = (r) => {
        try {
            process.send(Object.assign({ id: m.id }, r));
        } catch (e) {
            process.send({ id: m.id, ok: false, error: { name: 'SerializeError', message: e.message } });
        }
    };
    try {
        const fn = ops[m.op];
        if (fn === undefined)
            reply({ ok: false, error: { name: 'TypeError', message: 'unknown op ' + m.op } });
        else
            fn(m.args || {}, reply);
    } catch (e) {
        reply({ ok: false, error: Object.assign(serializeError(e), { thrown: true }) });
    }
});

process.on('disconnect', () => process.exit(0));
process.on('SIGTERM', () => process.exit(0));
