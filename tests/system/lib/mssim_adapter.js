'use strict';
/*
 * Microsoft TPM simulator ("mssim") TCP protocol in front of swtpm, so that
 * tss.js in simulator mode (`new Tpm(true, host, port)`, what
 * azure-iot-security-tpm uses) can drive a real software TPM. Device-protocol
 * doc §5.5 and Appendix B describe the same harness.
 *
 * tss.js (lib/TpmDevice.js, TpmTcpDevice) speaks, big-endian:
 *   command port P:   u32 15 HANDSHAKE, u32 clientVersion
 *                       -> u32 serverVersion (1), u32 endpoint flags, u32 0
 *                     u32 8 SEND_COMMAND, u8 locality, u32 len, len bytes
 *                       -> u32 len, len response bytes, u32 0
 *   platform port P+1: u32 1 POWER_ON, u32 11 NV_ON (and other signals) -> u32 0
 * and then sends TPM2_Startup(CLEAR) itself, accepting TPM_RC_INITIALIZE.
 *
 * swtpm, started with `--flags not-need-init,startup-clear` (powered on and
 * already past Startup(CLEAR)), takes raw TPM commands on its server port and
 * answers raw responses; the adapter does not use its control port. swtpm
 * serves one connection at a time, and azure-iot-security-tpm never closes
 * its TPM connection, so the adapter keeps ONE upstream connection and runs
 * the commands of all its clients one after another (a TPM is a serial device
 * anyway). Platform signals are acknowledged without touching swtpm:
 * resetting it under a client would lose the other clients' sessions.
 * Locality is not forwarded (tss.js always sends 0).
 *
 * swtpm has no resource manager and only a few slots for loaded sessions and
 * objects, so, like a resource manager, the adapter remembers the transient
 * handles each client created (StartAuthSession, CreatePrimary, Load,
 * HMAC_Start and friends) and flushes those the client did not flush itself
 * when it disconnects: a registration that fails half-way must not leave the
 * next test without a free slot. Any other request on either port closes that
 * client's connection, so a protocol surprise shows up as a TPM communication
 * error instead of a hang.
 *
 * Works on Node 18 and 20. Usable as a module (MssimAdapter) or from the
 * command line for manual runs:
 *   node mssim_adapter.js LISTEN_IP LISTEN_PORT SWTPM_HOST SWTPM_PORT
 * (LISTEN_PORT 0: two consecutive free ports; the chosen port is printed).
 */
const net = require('node:net');

const MSSIM = {
    POWER_ON: 1,
    POWER_OFF: 2,
    PHYS_PRES_ON: 3,
    PHYS_PRES_OFF: 4,
    SEND_COMMAND: 8,
    CANCEL_ON: 9,
    CANCEL_OFF: 10,
    NV_ON: 11,
    NV_OFF: 12,
    KEY_CACHE_ON: 13,
    KEY_CACHE_OFF: 14,
    HANDSHAKE: 15,
    RESET: 17,
    RESTART: 18,
    SESSION_END: 20,
    STOP: 21,
};
const SERVER_VERSION = 1;
/* tss.js TSS_TPM_INFO: TpmPlatformAvailable | TpmInRawMode | TpmSupportsPP (what mssim reports) */
const ENDPOINT_FLAGS = 0x1 | 0x4 | 0x8;
const PLATFORM_SIGNALS = new Set([MSSIM.POWER_ON, MSSIM.POWER_OFF, MSSIM.PHYS_PRES_ON,
    MSSIM.PHYS_PRES_OFF, MSSIM.CANCEL_ON, MSSIM.CANCEL_OFF, MSSIM.NV_ON, MSSIM.NV_OFF,
    MSSIM.KEY_CACHE_ON, MSSIM.KEY_CACHE_OFF, MSSIM.RESET, MSSIM.RESTART]);
const TPM_HEADER = 10;
/* Commands whose response carries a new transient handle right after the header. */
const CC_CREATES_HANDLE = new Set([
    0x131, /* CreatePrimary */
    0x157, /* Load */
    0x15b, /* HMAC_Start (sequence) */
    0x161, /* ContextLoad */
    0x167, /* LoadExternal */
    0x176, /* StartAuthSession */
    0x186, /* HashSequenceStart */
    0x191, /* CreateLoaded */
]);
const CC_FLUSH_CONTEXT = 0x165; /* flushHandle is the first parameter */
const CC_SEQUENCE_COMPLETE = 0x13e; /* the sequence handle (first handle) goes away */
const CC_EVENT_SEQUENCE_COMPLETE = 0x185; /* its second handle is the sequence */
const MAX_COMMAND = 64 * 1024;

function u32(...values)
{
    const b = Buffer.alloc(4 * values.length);
    values.forEach((v, i) => b.writeUInt32BE(v >>> 0, 4 * i));
    return b;
}

/* Listens on ip:port, resolves the server (rejects on a listen error). */
function listen(server, ip, port)
{
    return new Promise((resolve, reject) => {
        const onError = (e) => reject(e);
        server.once('error', onError);
        server.listen({ host: ip, port, exclusive: true }, () => {
            server.removeListener('error', onError);
            resolve(server);
        });
    });
}

function closeServer(server)
{
    return new Promise((resolve) => {
        if (!server.listening) {
            resolve();
            return;
        }
        server.close(() => resolve());
    });
}

/*
 * The single connection to swtpm's server port with a FIFO of commands.
 * send(cmd) resolves the raw response; after an upstream error every pending
 * and later command rejects.
 */
class SwtpmLink {
    constructor(host, port)
    {
        this.host = host;
        this.port = port;
        this.sock = null;
        this.queue = [];
        this.busy = null;
        this.buf = Buffer.alloc(0);
        this.error = null;
        this.commands = 0;
    }

    connect()
    {
        return new Promise((resolve, reject) => {
            const s = net.connect({ host: this.host, port: this.port });
            s.once('connect', () => {
                s.removeListener('error', reject);
                s.setNoDelay(true);
                s.on('data', (d) => this.onData(d));
                s.on('error', (e) => this.fail(e));
                s.on('close', () => this.fail(new Error('swtpm closed the connection')));
                this.sock = s;
                resolve();
            });
            s.once('error', reject);
        });
    }

    send(cmd)
    {
        if (this.error !== null)
            return Promise.reject(this.error);
        return new Promise((resolve, reject) => {
            this.queue.push({ cmd, resolve, reject });
            this.pump();
        });
    }

    pump()
    {
        if (this.busy !== null || this.queue.length === 0 || this.error !== null)
            return;
        this.busy = this.queue.shift();
        this.buf = Buffer.alloc(0);
        this.commands++;
        this.sock.write(this.busy.cmd);
    }

    onData(d)
    {
        if (this.busy === null) {
            this.fail(new Error(`swtpm sent ${d.length} bytes without a command`));
            return;
        }
        this.buf = Buffer.concat([this.buf, d]);
        if (this.buf.length < TPM_HEADER)
            return;
        const size = this.buf.readUInt32BE(2);
        if (size < TPM_HEADER || size > MAX_COMMAND) {
            this.fail(new Error(`swtpm response with size ${size}`));
            return;
        }
        if (this.buf.length < size)
            return;
        if (this.buf.length > size) {
            this.fail(new Error(`swtpm sent ${this.buf.length - size} bytes past its response`));
            return;
        }
        const done = this.busy;
        this.busy = null;
        done.resolve(this.buf);
        this.pump();
    }

    fail(e)
    {
        if (this.error !== null)
            return;
        this.error = e;
        const waiting = (this.busy ? [this.busy] : []).concat(this.queue);
        this.busy = null;
        this.queue = [];
        for (const w of waiting)
            w.reject(e);
        if (this.sock)
            this.sock.destroy();
    }

    close()
    {
        this.fail(new Error('adapter closed'));
    }
}

/*
 * One client connection on either port: parses mssim requests as they
 * arrive and answers them in order.
 */
class MssimConnection {
    constructor(adapter, sock, platform)
    {
        this.adapter = adapter;
        this.sock = sock;
        this.platform = platform;
        this.buf = Buffer.alloc(0);
        this.working = false;
        this.handles = new Set();
        sock.setNoDelay(true);
        sock.on('close', () => this.flushLeftovers());
        sock.on('data', (d) => {
            this.buf = Buffer.concat([this.buf, d]);
            this.next();
        });
        sock.on('error', () => sock.destroy());
    }

    drop(why)
    {
        this.adapter.log(`${this.platform ? 'platform' : 'command'} connection closed: ${why}`);
        this.sock.destroy();
    }

    /* Handles the complete requests in the buffer, one at a time. */
    next()
    {
        while (!this.working && this.open() && this.buf.length >= 4) {
            const code = this.buf.readUInt32BE(0);
            const complete = this.platform ? this.platformRequest(code) : this.commandRequest(code);
            if (!complete)
                break; /* the rest of the request comes with later data */
        }
    }

    open()
    {
        return !this.sock.destroyed && !this.sock.writableEnded;
    }

    take(n)
    {
        const b = this.buf.subarray(0, n);
        this.buf = this.buf.subarray(n);
        return b;
    }

    /* Each handler consumes one request and returns true, or false when it is incomplete. */
    platformRequest(code)
    {
        this.adapter.signals.push(code);
        if (PLATFORM_SIGNALS.has(code)) {
            this.take(4);
            this.sock.write(u32(0));
        } else if (code === MSSIM.SESSION_END || code === MSSIM.STOP) {
            this.take(4);
            this.sock.end();
        } else {
            this.drop(`platform request ${code} is not supported`);
        }
        return true;
    }

    commandRequest(code)
    {
        if (code === MSSIM.HANDSHAKE) {
            if (this.buf.length < 8)
                return false;
            this.take(8);
            this.sock.write(u32(SERVER_VERSION, ENDPOINT_FLAGS, 0));
        } else if (code === MSSIM.SEND_COMMAND) {
            if (this.buf.length < 9)
                return false;
            const len = this.buf.readUInt32BE(5);
            if (len < TPM_HEADER || len > MAX_COMMAND) {
                this.drop(`command of ${len} bytes`);
                return true;
            }
            if (this.buf.length < 9 + len)
                return false;
            this.forward(Buffer.from(this.take(9 + len).subarray(9)));
        } else if (code === MSSIM.SESSION_END || code === MSSIM.STOP) {
            this.take(4);
            this.sock.end();
        } else {
            this.drop(`command-port request ${code} is not supported`);
        }
        return true;
    }

    forward(cmd)
    {
        this.working = true;
        this.adapter.link.send(cmd).then((resp) => {
            this.working = false;
            this.track(cmd, resp);
            if (!this.open()) {
                this.flushLeftovers(); /* the client left while its command ran */
                return;
            }
            this.sock.write(Buffer.concat([u32(resp.length), resp, u32(0)]));
            this.next();
        }, (e) => {
            this.working = false;
            this.drop(`swtpm: ${e.message}`);
        });
    }

    /* Notes the transient handles a successful command created or removed. */
    track(cmd, resp)
    {
        if (cmd.length < TPM_HEADER || resp.length < TPM_HEADER || resp.readUInt32BE(6) !== 0)
            return;
        const cc = cmd.readUInt32BE(6);
        if (CC_CREATES_HANDLE.has(cc) && resp.length >= TPM_HEADER + 4)
            this.handles.add(resp.readUInt32BE(TPM_HEADER));
        else if ((cc === CC_FLUSH_CONTEXT || cc === CC_SEQUENCE_COMPLETE) && cmd.length >= 14)
            this.handles.delete(cmd.readUInt32BE(TPM_HEADER));
        else if (cc === CC_EVENT_SEQUENCE_COMPLETE && cmd.length >= 18)
            this.handles.delete(cmd.readUInt32BE(TPM_HEADER + 4));
    }

    /* TPM2_FlushContext for what a closed client left loaded (errors ignored). */
    flushLeftovers()
    {
        for (const h of this.handles) {
            const flush = Buffer.alloc(14);
            flush.writeUInt16BE(0x8001, 0); /* TPM_ST_NO_SESSIONS */
            flush.writeUInt32BE(14, 2);
            flush.writeUInt32BE(CC_FLUSH_CONTEXT, 6);
            flush.writeUInt32BE(h, 10);
            this.adapter.flushed++;
            this.adapter.link.send(flush).catch(() => {});
        }
        this.handles.clear();
    }
}

class MssimAdapter {
    /*
     * opts.ip: address to listen on; opts.port: command port (0 = two
     * consecutive free ports chosen here); opts.swtpmHost/swtpmPort: swtpm's
     * server port; opts.log: function for diagnostics (default: none).
     */
    constructor(opts)
    {
        this.ip = opts.ip;
        this.port = opts.port || 0;
        this.swtpmHost = opts.swtpmHost || opts.ip;
        this.swtpmPort = opts.swtpmPort;
        this.log = opts.log || (() => {});
        this.conns = new Set();
        this.signals = [];
        this.flushed = 0;
        this.link = null;
    }

    /* Connects to swtpm and listens on ip:port (commands) and ip:port+1 (platform). */
    async start()
    {
        this.link = new SwtpmLink(this.swtpmHost, this.swtpmPort);
        await this.link.connect();
        for (let attempt = 0; attempt < 50; attempt++) {
            const cmd = this.server(false);
            const plat = this.server(true);
            try {
                await listen(cmd, this.ip, this.port);
                const port = cmd.address().port;
                await listen(plat, this.ip, port + 1);
                this.port = port;
                this.cmdServer = cmd;
                this.platServer = plat;
                return this;
            } catch (e) {
                await closeServer(cmd);
                await closeServer(plat);
                if (this.port !== 0 || e.code !== 'EADDRINUSE')
                    throw e;
            }
        }
        throw new Error(`no two consecutive free ports on ${this.ip}`);
    }

    server(platform)
    {
        return net.createServer((sock) => {
            this.conns.add(sock);
            sock.on('close', () => this.conns.delete(sock));
            new MssimConnection(this, sock, platform); // eslint-disable-line no-new
        });
    }

    /* Number of TPM commands forwarded to swtpm so far. */
    get commands()
    {
        return this.link ? this.link.commands : 0;
    }

    async close()
    {
        for (const s of this.conns)
            s.destroy();
        if (this.link)
            this.link.close();
        if (this.cmdServer)
            await closeServer(this.cmdServer);
        if (this.platServer)
            await closeServer(this.platServer);
    }
}

module.exports = { MssimAdapter, MSSIM };

if (require.main === module) {
    const [ip, port, swtpmHost, swtpmPort] = process.argv.slice(2);
    if (!swtpmPort) {
        process.stderr.write('usage: mssim_adapter.js LISTEN_IP LISTEN_PORT SWTPM_HOST ' +
            'SWTPM_PORT\n');
        process.exit(2);
    }
    new MssimAdapter({
        ip, port: Number(port), swtpmHost, swtpmPort: Number(swtpmPort),
        log: (m) => process.stderr.write(`mssim_adapter: ${m}\n`),
    }).start().then((a) => {
        process.stdout.write(`${a.port}\n`);
    }, (e) => {
        process.stderr.write(`mssim_adapter: ${e.message}\n`);
        process.exit(1);
    });
}
