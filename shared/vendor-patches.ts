/**
 * Every change this project makes to the behaviour of a third-party library, in one place, applied explicitly
 * (applyVendorPatches, called by the ingress and delivery constructors) rather than as a side effect of an import.
 * Each patch was written against the versions in PATCHED_VERSIONS and reaches into private members; the test
 * test/vendor-patches.test.ts fails when an installed version differs, so an upgrade is checked patch by patch.
 */
import { createRequire } from 'node:module';
import DataStream from 'nodemailer/lib/smtp-connection/data-stream.js';
import ClientConnection from 'nodemailer/lib/smtp-connection/index.js';
import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';
import { SMTPStream } from 'smtp-server/lib/smtp-stream.js';

export const PATCHED_VERSIONS = { 'smtp-server': '3.21.6', nodemailer: '10.6.1' } as const;

/** The installed version of a patched library (its package.json). */
export function installedVersion(name: keyof typeof PATCHED_VERSIONS): string {
  return (createRequire(import.meta.url)(`${name}/package.json`) as { version: string }).version;
}

/** Options the patched smtp-server understands beside its own. */
export interface PatchedServerOptions {
  /**
   * Delay before the greeting, to catch early talkers (ms), or a function of the client address (a client that
   * passed before may be greeted at once). smtp-server has a fixed 100 ms; absent = that.
   */
  greetPause?: number | ((remoteAddress: string) => number);
  /**
   * Per-record deadline (Postfix smtpd_per_record_deadline): a command line must be complete within this many ms
   * of the server starting to wait for it, however the bytes trickle in. Absent = no deadline.
   */
  commandTimeout?: number;
  /** In DATA the deadline grows by the time the bytes received so far take at this rate (bytes/s). */
  minDataRate?: number;
  /** Longest time DATA may take, however fast the bytes come (ms). Absent = no limit. */
  dataTimeout?: number;
}

interface ConnectionInternals {
  _server: { options: PatchedServerOptions & { maxClients?: number; secure?: boolean }; connections: Set<unknown> };
  _parser: (SMTPStream & { _dataMode: boolean }) | false;
  _ready: boolean;
  _closing: boolean;
  _closed: boolean;
  _handlerPending: boolean;
  name: string;
  remoteAddress: string;
  /** The greet pause this connection got (0: greeted at once, so nobody on it is an early talker). */
  __mxPause?: number;
  send(code: number, data: unknown, context?: unknown): void;
  _setListeners(cb: () => void): void;
  connectionReady(): void;
  _onCommand(command: Buffer, callback: () => void): void;
  _onClose(): void;
  __mxDeadline?: NodeJS.Timeout;
  __mxDataStart?: number;
}

type ConnectionProto = ConnectionInternals & { __mxPatched?: boolean };
type StreamProto = { continue(): void; _continueCallback: (() => void) | boolean; __mxPatched?: boolean };
type DataStreamState = { lastByte: number | false; inByteCount: number; outByteCount: number; push(chunk: Buffer): boolean };
type DataStreamProto = {
  _transform(this: DataStreamState, chunk: unknown, encoding: BufferEncoding, done: (err?: Error | null) => void): void;
  __mxPatched?: boolean;
};

// smtp-server picks an enhanced code from the basic code alone (550 -> 5.1.1), which is wrong for a relay denial
// (5.7.1) or a loop (5.4.6). Replies whose text already carries an enhanced code are sent as they are.
const ENHANCED_PREFIX = /^[245]\.\d{1,3}\.\d{1,3} /;

function patchSmtpConnection(proto: ConnectionProto): void {
  const send = proto.send;
  proto.send = function (code, data, context) {
    const own = typeof data === 'string' && ENHANCED_PREFIX.test(data);
    send.call(this, code, data, own ? false : context);
  };

  // smtp-server waits a fixed 100 ms before every greeting (SMTPConnection.init): ~100 ms per message for a sender
  // that opens a connection per message. Same code with the pause taken from the options (0: greet at once).
  const connectionReady = proto.connectionReady;
  proto.connectionReady = function () {
    connectionReady.call(this);
    armDeadline(this);
  };
  Object.assign(proto, {
    init(this: ConnectionInternals) {
      this._setListeners(() => {
        const options = this._server.options;
        if (options.maxClients && this._server.connections.size > options.maxClients) {
          return this.send(421, this.name + ' Too many connected clients, try again in a moment', false);
        }
        const pause = typeof options.greetPause === 'function' ? options.greetPause(this.remoteAddress) : (options.greetPause ?? 100);
        this.__mxPause = pause;
        if (pause <= 0) return this.connectionReady();
        setTimeout(() => this.connectionReady(), pause).unref();
      });
    },
  });

  // The per-record deadline: every complete command line re-arms it for the next one; a socket idle timer (which
  // every byte restarts) cannot stop a client that drips one byte at a time from holding the slot for ever.
  const onCommand = proto._onCommand;
  proto._onCommand = function (command, callback) {
    // Without a greet pause nobody is an early talker: a command that comes while onConnect is still deciding waits
    // for the greeting instead of getting "421 You talk too soon" (the parser reads on only after the callback).
    if (!this._ready && this.__mxPause !== undefined && this.__mxPause <= 0 && !this._closing && !this._closed) {
      setTimeout(() => this._onCommand(command, callback), 1);
      return;
    }
    clearTimeout(this.__mxDeadline);
    this.__mxDeadline = undefined;
    onCommand.call(this, command, callback);
    if (this._parser && this._parser._dataMode) this.__mxDataStart = Date.now();
    armDeadline(this);
  };
  const onClose = proto._onClose;
  proto._onClose = function () {
    clearTimeout(this.__mxDeadline);
    onClose.call(this);
  };
}

function armDeadline(c: ConnectionInternals, delayMs?: number): void {
  const { commandTimeout, dataTimeout } = c._server.options;
  if (c._closing || c._closed) return;
  const inData = c._parser && c._parser._dataMode;
  const timeout = inData ? Math.min(commandTimeout || Infinity, dataTimeout || Infinity) : commandTimeout;
  if (timeout === Infinity) return;
  if (!timeout) return;
  clearTimeout(c.__mxDeadline);
  c.__mxDeadline = setTimeout(() => onDeadline(c), delayMs ?? timeout);
  c.__mxDeadline.unref();
}

/** In DATA: ms left before the minimum rate (after commandTimeout of grace) or dataTimeout is missed. */
function dataTimeLeft(c: ConnectionInternals, parser: SMTPStream, dataStart: number): number {
  const { commandTimeout = 0, minDataRate = 0, dataTimeout = 0 } = c._server.options;
  const byRate = commandTimeout > 0 ? commandTimeout + (minDataRate > 0 ? (parser.dataBytes / minDataRate) * 1000 : Infinity) : Infinity;
  return Math.min(byRate, dataTimeout > 0 ? dataTimeout : Infinity) - (Date.now() - dataStart);
}

function onDeadline(c: ConnectionInternals): void {
  if (c._closing || c._closed || !c._parser) return;
  // The client waits for us (a handler has not called back, the message is being committed): not its delay.
  if (c._handlerPending || !c._ready) return armDeadline(c);
  if (c._parser._dataMode && c.__mxDataStart !== undefined) {
    const left = dataTimeLeft(c, c._parser, c.__mxDataStart);
    // Re-checked at least every commandTimeout: the allowance grows with the bytes that arrive.
    if (left > 0) return armDeadline(c, Math.min(left, c._server.options.commandTimeout || left));
  } else if (!c._parser._dataMode && (c as unknown as { _dataStream: unknown })._dataStream) {
    // DATA is over and onData has not decided yet.
    return armDeadline(c);
  }
  // 421 closes the connection; a message cut off in DATA is dropped with its stream (ingress: on 'close').
  c.send(421, `4.4.2 ${c.name} Error: timeout exceeded`);
}

function patchSmtpStream(proto: StreamProto): void {
  // SMTPStream.continue() runs the continuation and only then clears it. When the continuation parses a whole
  // pipelined transaction synchronously (MAIL, RCPT, DATA, body, "."), it installs the next message's continuation,
  // which the late clear then erases: the commands after the second message (NOOP, QUIT) are never answered.
  proto.continue = function () {
    const next = this._continueCallback;
    if (typeof next === 'function') {
      this._continueCallback = false;
      next();
    } else {
      this._continueCallback = true;
    }
  };
}

/** True when nodemailer's DataStream would insert nothing into `chunk`, given the byte before it. */
export function needsNoStuffing(chunk: Buffer, prev: number | false): boolean {
  const n = chunk.length;
  const first = chunk[0];
  if (prev === 0x0d && first !== 0x0a) return false; // bare CR at the end of the last chunk
  if (first === 0x0a && prev !== 0x0d) return false; // bare LF
  if (first === 0x2e && (prev === 0x0a || prev === false)) return false; // dot at the start of a line
  for (let i = chunk.indexOf(0x0d); i !== -1 && i < n - 1; i = chunk.indexOf(0x0d, i + 1)) {
    if (chunk[i + 1] !== 0x0a) return false;
  }
  for (let i = chunk.indexOf(0x0a); i !== -1; i = chunk.indexOf(0x0a, i + 1)) {
    if (i > 0 && chunk[i - 1] !== 0x0d) return false; // bare LF (at 0: checked against prev above)
    if (chunk[i + 1] === 0x2e) return false; // dot at the start of a line
  }
  return true;
}

function patchDataStream(proto: DataStreamProto): void {
  // nodemailer dot-stuffs outgoing DATA in a JavaScript loop over every byte, which the CPU profile showed at about
  // a fifth of the agent's time with 100 KB messages. What we send was normalised at ingress (CRLF line ends only),
  // so nearly every chunk needs no insert: that is checked at memchr speed and the chunk passes unchanged. A chunk
  // that needs one takes nodemailer's own code, so the bytes on the wire are exactly what they were.
  const original = proto._transform;
  proto._transform = function (chunk, encoding, done) {
    if (Buffer.isBuffer(chunk) && chunk.length > 0 && needsNoStuffing(chunk, this.lastByte)) {
      this.inByteCount += chunk.length;
      this.outByteCount += chunk.length;
      this.lastByte = chunk[chunk.length - 1]!;
      this.push(chunk);
      return done();
    }
    original.call(this, chunk, encoding, done);
  };
}

/** What a sent message's info carries beside nodemailer's own fields (see patchClientConnection). */
export interface SentInfoExtras {
  /** The TLS version of the session that sent it ("TLSv1.3"); absent over plaintext. */
  tlsVersion?: string;
}

type ClientInternals = { secure: boolean; _socket?: { getProtocol?: () => string | null } };
type ClientProto = ClientInternals & {
  send(envelope: unknown, message: unknown, done: (err: Error | null, info?: Record<string, unknown>) => void): void;
  __mxPatched?: boolean;
};

function patchClientConnection(proto: ClientProto): void {
  // A delivery log line names the TLS version (Postfix: "TLS connection established ... TLSv1.3"); nodemailer
  // upgrades the socket inside the pooled connection and reports nothing of it, so the sent message's info
  // takes it from the socket that carried the message.
  const original = proto.send;
  proto.send = function (envelope, message, done) {
    original.call(this, envelope, message, (err, info) => {
      if (!err && info && this.secure) {
        const version = this._socket?.getProtocol?.();
        if (version) info.tlsVersion = version;
      }
      done(err, info);
    });
  };
}

function once<T extends { __mxPatched?: boolean }>(proto: T, patch: (p: T) => void): void {
  if (proto.__mxPatched) return;
  patch(proto);
  proto.__mxPatched = true;
}

/** Applies every patch (idempotent). */
export function applyVendorPatches(): void {
  once(SMTPConnection.prototype as unknown as ConnectionProto, patchSmtpConnection);
  once(SMTPStream.prototype as unknown as StreamProto, patchSmtpStream);
  once(DataStream.prototype as unknown as DataStreamProto, patchDataStream);
  once(ClientConnection.prototype as unknown as ClientProto, patchClientConnection);
}
