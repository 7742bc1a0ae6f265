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
