'use strict';
/*
 * Child process started by lib/provd.js (SdkWorker) with NODE_EXTRA_CA_CERTS
 * pointing at the test CA. Runs the unmodified Azure IoT SDKs on request:
 * messages {id, op, args} in, {id, ok, ...} out over the fork IPC channel.
 * Always uses the SDKs' callback forms (the service client's promise form of
 * runBulkEnrollmentOperation never resolves, and Query.next() without an
 * argument drops the continuation token).
 */
const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');
const { Http: DeviceHttp } = require('azure-iot-provisioning-device-http');
const { SymmetricKeySecurityClient } = require('azure-iot-security-symmetric-key');
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
        statusCode: resp && typeof resp.statusCode === 'number' ? resp.statusCode : undefined,
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

const ops = {
    ping(args, done)
    {
        done({ ok: true, ca: process.env.NODE_EXTRA_CA_CERTS, node: process.version });
    },

    register(args, done)
    {
        const sec = new SymmetricKeySecurityClient(args.registrationId, args.key);
        const client = ProvisioningDeviceClient.create(args.host, args.scope, new DeviceHttp(), sec);
        if (args.payload !== undefined)
            client.setProvisioningPayload(args.payload);
        client.register((err, result) => {
            if (err)
                done({ ok: false, error: serializeError(err) });
            else
                done({ ok: true, result });
        });
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
