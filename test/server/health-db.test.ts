// Health reflects the database: NOT_SERVING once PostgreSQL stops answering.
import { createClient } from '@connectrpc/connect';
import { createGrpcTransport } from '@connectrpc/connect-node';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Health, HealthCheckResponse_ServingStatus } from '../../gen/health/v1/health_pb.js';
import { startTestApp, type TestApp } from '../support/app.js';

let t: TestApp;

beforeAll(async () => {
  t = await startTestApp();
});

afterAll(async () => {
  await t.app.close();
  await t.database?.drop();
});

it('is SERVING with the database up and NOT_SERVING when it is unreachable', async () => {
  const health = createClient(Health, createGrpcTransport({ baseUrl: t.url }));
  expect((await health.check({ service: '' })).status).toBe(HealthCheckResponse_ServingStatus.SERVING);
  expect((await health.check({ service: 'billing.v1.BillingService' })).status).toBe(HealthCheckResponse_ServingStatus.SERVING);
  // Close the service's connection pool under it: every query now fails.
  await t.app.db.close();
  expect((await health.check({ service: '' })).status).toBe(HealthCheckResponse_ServingStatus.NOT_SERVING);
});
