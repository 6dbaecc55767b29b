/**
 * Shadow pairing: which agent keeps the shadow copies of which. Pure and deterministic (the same fleet gives the
 * same pairs on any controller, in any order of arrival), so a controller restart changes nothing.
 */

export interface PairingMember {
  id: string;
  region: string;
}

/**
 * A ring over `members` in which neighbours are in different regions wherever the fleet allows: regions in name
 * order, agents of each region by id, dealt out one region at a time (a1 b1 c1 a2 b2 a3 ...); each agent's peer is
 * the next in the ring. One member alone has no peer. Returns agent id -> peer id.
 */
export function ringPeers(members: readonly PairingMember[]): Map<string, string> {
  const byRegion = new Map<string, string[]>();
  for (const m of [...members].sort((a, b) => a.id.localeCompare(b.id))) {
    const list = byRegion.get(m.region) ?? [];
    list.push(m.id);
    byRegion.set(m.region, list);
  }
  const regions = [...byRegion.keys()].sort();
  const ring: string[] = [];
  for (let round = 0; ring.length < members.length; round++) {
    for (const r of regions) {
      const id = byRegion.get(r)![round];
      if (id !== undefined) ring.push(id);
    }
  }
  // Dealing rounds can leave the largest region's tail adjacent to itself; a later swap is not worth the churn:
  // the ring is only a preference (another region where possible), and a same-region pair still survives a host.
  const peers = new Map<string, string>();
  if (ring.length < 2) return peers;
  for (const [i, id] of ring.entries()) peers.set(id, ring[(i + 1) % ring.length]!);
  return peers;
}
