// MikroORM entity definitions: the schema as the ORM knows it. The migrations in
// ./migrations create exactly these tables (test/schema.test.ts checks they agree).
// The money path does not load entities: it runs short SQL statements (ledger-sql.ts),
// because an ORM unit of work costs ~10x the CPU of the statements themselves.
import { defineEntity, p } from '@mikro-orm/core';

export const UserAccountSchema = defineEntity({
  name: 'UserAccount',
  tableName: 'user_accounts',
  checks: [
    { name: 'user_accounts_balance_nonnegative', expression: 'balance_millicredits >= 0' },
    { name: 'user_accounts_reserved_nonnegative', expression: 'reserved_millicredits >= 0' },
    { name: 'user_accounts_reserved_within_balance', expression: 'reserved_millicredits <= balance_millicredits' },
    { name: 'user_accounts_balance_max', expression: 'balance_millicredits <= 1000000000000000' },
    { name: 'user_accounts_plan_known', expression: "plan in ('FREE', 'PRO', 'ADMIN')" },
  ],
  properties: {
    userId: p.text().primary(),
    balanceMillicredits: p.bigint().default(0),
    reservedMillicredits: p.bigint().default(0),
    plan: p.text().default('FREE'),
    entitlements: p.array().columnType('text[]').defaultRaw("'{}'"),
    createdAt: p.datetime().defaultRaw('now()'),
    updatedAt: p.datetime().defaultRaw('now()'),
  },
});

export const LedgerTransactionSchema = defineEntity({
  name: 'LedgerTransaction',
  tableName: 'transactions',
  indexes: [{ name: 'transactions_user_id_id_index', properties: ['userId', 'id'] }],
  checks: [
    {
      name: 'transactions_type_known',
      expression: "type in ('CHARGE', 'REFUND', 'GRANT', 'PROMO', 'DAILY_TOP_UP', 'DEPOSIT')",
    },
    { name: 'transactions_balance_after_nonnegative', expression: 'balance_after_millicredits >= 0' },
  ],
  properties: {
    id: p.bigint().primary().autoincrement(),
    userId: p.text(),
    type: p.text(),
    amountMillicredits: p.bigint(),
    balanceAfterMillicredits: p.bigint(),
    product: p.text().default(''),
    operation: p.text().default(''),
    reference: p.text().default(''),
    reason: p.text().default(''),
    idempotencyKey: p.text().nullable(),
    metadata: p.json().defaultRaw("'{}'"),
    waivedReason: p.text().nullable(),
    refundedTransactionId: p.bigint().nullable().index('transactions_refunded_transaction_id_index'),
    reservationId: p.bigint().nullable(),
    createdAt: p.datetime().defaultRaw('now()'),
  },
});

export const PostingSchema = defineEntity({
  name: 'Posting',
  tableName: 'postings',
  properties: {
    transactionId: p.bigint().primary(),
    account: p.text().primary().index('postings_account_index'),
    amountMillicredits: p.bigint(),
  },
});

export const IdempotencyKeySchema = defineEntity({
  name: 'IdempotencyKey',
  tableName: 'idempotency_keys',
  properties: {
    userId: p.text().primary(),
    idempotencyKey: p.text().primary(),
    requestHash: p.text(),
    result: p.json(),
    createdAt: p.datetime().defaultRaw('now()'),
  },
});

export const ReservationSchema = defineEntity({
  name: 'Reservation',
  tableName: 'reservations',
  checks: [
    { name: 'reservations_amount_nonnegative', expression: 'amount_millicredits >= 0' },
    { name: 'reservations_status_known', expression: "status in ('ACTIVE', 'CAPTURED', 'RELEASED', 'EXPIRED')" },
  ],
  properties: {
    id: p.bigint().primary().autoincrement(),
    userId: p.text().index('reservations_user_id_index'),
    amountMillicredits: p.bigint(),
    status: p.text(),
    product: p.text().default(''),
    expiresAt: p.datetime().index('reservations_expires_at_index'),
    createdAt: p.datetime().defaultRaw('now()'),
    settledAt: p.datetime().nullable(),
  },
});

export const DailyFreeUsageSchema = defineEntity({
  name: 'DailyFreeUsage',
  tableName: 'daily_free_usage',
  checks: [{ name: 'daily_free_usage_used_nonnegative', expression: 'used >= 0' }],
  properties: {
    userId: p.text().primary(),
    day: p.date().primary(),
    used: p.integer(),
  },
});

export const DailyTopUpSchema = defineEntity({
  name: 'DailyTopUp',
  tableName: 'daily_top_ups',
  properties: {
    userId: p.text().primary(),
    day: p.date().primary(),
    transactionId: p.bigint(),
  },
});

export const PromoCodeSchema = defineEntity({
  name: 'PromoCode',
  tableName: 'promo_codes',
  checks: [
    { name: 'promo_codes_amount_positive', expression: 'amount_millicredits > 0' },
    { name: 'promo_codes_max_nonnegative', expression: 'max_redemptions >= 0' },
    { name: 'promo_codes_within_cap', expression: 'max_redemptions = 0 or redemptions <= max_redemptions' },
  ],
  properties: {
    code: p.text().primary(),
    amountMillicredits: p.bigint(),
    maxRedemptions: p.bigint().default(0),
    redemptions: p.bigint().default(0),
    expiresAt: p.datetime().nullable(),
    disabled: p.boolean().default(false),
    createdAt: p.datetime().defaultRaw('now()'),
  },
});

export const PromoRedemptionSchema = defineEntity({
  name: 'PromoRedemption',
  tableName: 'promo_redemptions',
  properties: {
    code: p.text().primary(),
    userId: p.text().primary(),
    transactionId: p.bigint(),
    createdAt: p.datetime().defaultRaw('now()'),
  },
});

export const entities = [
  UserAccountSchema,
  LedgerTransactionSchema,
  PostingSchema,
  IdempotencyKeySchema,
  ReservationSchema,
  DailyFreeUsageSchema,
  DailyTopUpSchema,
  PromoCodeSchema,
  PromoRedemptionSchema,
];
