import type { NewMessage } from './types.js';

/**
 * Bytes on their way to the writer thread. postMessage clones a Buffer with the whole ArrayBuffer under it (an
 * 8 KiB pool slab for a small Buffer, a socket read's allocation for a slice of it), and transferring the
 * caller's own ArrayBuffer would detach buffers callers still hold (a body committed twice, a bounce's head).
 * So each buffer is copied once into an ArrayBuffer of its exact size, and that copy is transferred.
 */

/** A message as the writer thread receives it: the body's bytes as Uint8Arrays (what postMessage delivers). */
export type WireMessage = Omit<NewMessage, 'body'> & { body: Uint8Array | readonly Uint8Array[] };

/** The caller's bytes, copied once; its ArrayBuffer goes in the transfer list. */
export function ownCopy(buf: Uint8Array): Uint8Array {
  return new Uint8Array(buf);
}

/** `msg` for postMessage, with the ArrayBuffers to transfer. */
export function messageToWire(msg: NewMessage): { message: WireMessage; transfer: ArrayBuffer[] } {
  const body = Buffer.isBuffer(msg.body) ? ownCopy(msg.body) : msg.body.map(ownCopy);
  const transfer = (Array.isArray(body) ? body : [body]).map((b: Uint8Array) => b.buffer as ArrayBuffer);
  return { message: { ...msg, body }, transfer };
}

/** A received Uint8Array as a Buffer (no copy). */
export function bufferFromWire(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** A received message with Buffers again (no copy): a whole body stays whole, pieces stay pieces. */
export function messageFromWire(msg: WireMessage): NewMessage {
  const body = msg.body;
  return { ...msg, body: body instanceof Uint8Array ? bufferFromWire(body) : body.map(bufferFromWire) };
}
