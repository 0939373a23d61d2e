// The bank's world (hot users, a PRO user, promo codes, products) and a summary of a run,
// shared by the bank test and the kill -9 test.
import type { Client } from '@connectrpc/connect';
import type { AdminService } from '../../gen/billing/v1/admin_service_pb.js';
import { ErrorReason } from '../../gen/billing/v1/errors_pb.js';
import { Plan } from '../../gen/billing/v1/types_pb.js';
import type { Catalogue } from '../../src/domain/catalogue.js';
import type { BankHistory, BankWorld, PromoSpec } from './workload.js';

/** Five users (the last PRO; on muse the fourth holds the m4l entitlement) and four promo codes, named after `tag`. */
export async function setUpWorld(admin: Client<typeof AdminService>, catalogue: Catalogue, tag: string): Promise<BankWorld> {
  const users = Array.from({ length: 5 }, (_, i) => `${tag}-u${i}`);
  const proUser = users[4] as string;
  await admin.setPlan({ userId: proUser, plan: Plan.PRO });
  if (catalogue.name === 'muse') await admin.setEntitlement({ userId: users[3] as string, entitlement: 'm4l', active: true });
  const prefix = tag.toUpperCase();
  const codes: PromoSpec[] = [
    { code: `${prefix}-OPEN1`, amountMillicredits: 700n, maxRedemptions: 0n },
    { code: `${prefix}-OPEN2`, amountMillicredits: 300n, maxRedemptions: 0n },
    { code: `${prefix}-CAP2`, amountMillicredits: 1_000n, maxRedemptions: 2n },
    { code: `${prefix}-CAP4`, amountMillicredits: 500n, maxRedemptions: 4n },
  ];
  for (const c of codes) await admin.createPromoCode(c);
  const products = catalogue.name === 'muse' ? ['muse', 'vital_ai', 'm4l'] : ['mu', 'news'];
  return { tag, users, proUser, catalogue, products, codes };
}

/** Requests, rate, modes and outcomes of a run, for the log. */
export function describeHistory(history: BankHistory): string {
  const counts = new Map<string, number>();
  for (const a of history.attempts) {
    const label = `${a.meta.kind}:${a.outcome.ok ? 'ok' : ErrorReason[a.outcome.reason]}`;
    counts.set(label, (counts.get(label) ?? 0) + 1);
  }
  const modes = new Map<string, number>();
  for (const a of history.attempts) modes.set(a.mode, (modes.get(a.mode) ?? 0) + 1);
  const rate = Math.round((history.attempts.length / history.elapsedMs) * 1000);
  return [
    `${history.attempts.length} requests in ${history.elapsedMs} ms (${rate}/s), ${history.groups.length} duplicate groups`,
    `modes ${JSON.stringify(Object.fromEntries(modes))}`,
    `outcomes ${JSON.stringify(Object.fromEntries([...counts].sort()))}`,
  ].join('\n  ');
}
