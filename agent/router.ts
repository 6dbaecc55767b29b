import { EventEmitter } from 'node:events';
import type { RouteTable } from '../shared/routes.js';

/** Holds the table in force. A swap is one reference assignment, so a lookup never sees half a table. */
export class Router extends EventEmitter<{ change: [RouteTable, RouteTable] }> {
  private current: RouteTable;

  constructor(initial: RouteTable) {
    super();
    this.current = initial;
  }

  get table(): RouteTable {
    return this.current;
  }

  /** Replaces the table; listeners (queue hold/release reconciliation) run after the swap. */
  apply(next: RouteTable): void {
    const previous = this.current;
    this.current = next;
    this.emit('change', next, previous);
  }
}
