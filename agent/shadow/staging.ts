import { randomInt } from 'node:crypto';
import type { ShadowCopy, ShadowPart } from '../../proto/gen/mxswitch/v1/shadow.js';
import type { ShadowCopyRow } from '../spool/spool.js';
import type { ShadowStoreGroup } from './store-group.js';

type Transfer = { id: string; xfer: number; next: number };

/** A transfer key at the peer: unique per (client, message) whatever the client numbers its transfers. */
const newXfer = () => randomInt(2 ** 48 - 1);

/**
 * The large copies one client stream is sending in parts (ShadowPart), on the peer: each part is staged under a
 * key of the peer's own (the client's transfer numbers start again with every stream and restart), in order from
 * part 0. The copy that closes a transfer names it; whether all its parts are there is checked in the commit.
 * A transfer whose copy never comes (stream ended, or the client started the message again) loses its parts.
 */
export class CallStaging {
  private readonly transfers = new Map<number, Transfer>();

  constructor(
    private readonly group: ShadowStoreGroup,
    private readonly origin: string,
  ) {}

  /** Stages `p`; rejects (staging nothing) when it does not follow the part before it on this stream. */
  part(p: ShadowPart): Promise<void> {
    let t = this.transfers.get(p.transfer);
    if (p.seq === 0) {
      // The message again (a re-shadow after a copy given up): its older transfer will not be closed.
      for (const [n, other] of this.transfers) if (other.id === p.id || n === p.transfer) this.forget(n, other);
      t = { id: p.id, xfer: newXfer(), next: 0 };
      this.transfers.set(p.transfer, t);
    }
    if (!t || t.id !== p.id || p.seq !== t.next) return Promise.reject(new Error(`part ${p.seq} of ${p.id} (transfer ${p.transfer}) does not follow a part on this stream`));
    t.next++;
    return this.group.stagePart(this.origin, p.id, t.xfer, p.seq, p.data);
  }

  /**
   * What the commit needs of a copy's transfer; a transfer not seen on this stream names no parts at all, so
   * the copy is not kept. The transfer is done either way.
   */
  close(c: ShadowCopy): ShadowCopyRow['staged'] {
    if (!c.transfer) return undefined;
    const t = this.transfers.get(c.transfer);
    this.transfers.delete(c.transfer);
    return { xfer: t && t.id === c.id ? t.xfer : -1, parts: c.parts, size: c.size };
  }

  /** The parts of `staged` when its commit failed (nothing names them). */
  dropped(id: string, staged: ShadowCopyRow['staged']): void {
    if (staged && staged.xfer >= 0) this.group.dropStaged(this.origin, id, staged.xfer);
  }

  /** The stream ended: transfers still open will not be closed. */
  end(): void {
    for (const [n, t] of this.transfers) this.forget(n, t);
  }

  private forget(n: number, t: Transfer): void {
    this.transfers.delete(n);
    this.group.dropStaged(this.origin, t.id, t.xfer);
  }
}
