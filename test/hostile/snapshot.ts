// A fingerprint of every table of the test database, taken in one statement, so a test can
// prove that a refused request wrote nothing at all: not a row, not a changed column.
import type { Database } from '../../src/storage/database.js';

export type Snapshot = Readonly<Record<string, string>>;

/** Builds the fingerprint statement once: the table list does not change during a test. */
export async function snapshotter(db: Database): Promise<() => Promise<Snapshot>> {
  const tables = await db.query<{ name: string }>(
    `select table_name as name from information_schema.tables
      where table_schema = 'public' and table_type = 'BASE TABLE' and table_name <> 'mikro_orm_migrations'
      order by table_name`,
  );
  if (tables.length === 0) throw new Error('the test database has no tables to snapshot');
  // Each row's text form, sorted, hashed: equal fingerprints mean byte-for-byte equal tables.
  const sql = tables
    .map(({ name }) => `select '${name}' as name, count(*)::text || ':' || coalesce(md5(string_agg(t::text, '|' order by t::text)), '') as digest from "${name}" t`)
    .join(' union all ');
  return async () => {
    const rows = await db.query<{ name: string; digest: string }>(sql);
    return Object.fromEntries(rows.map((r) => [r.name, r.digest]));
  };
}

/** The tables whose fingerprints differ, for an assertion message. */
export function changedTables(before: Snapshot, after: Snapshot): string[] {
  return Object.keys({ ...before, ...after }).filter((name) => before[name] !== after[name]);
}
