// Opaque cursor tokens and page cutting, shared by every List RPC. A token is the
// base64url of a kind prefix and the last key of the previous page; a token of another
// kind, or garbage, is INVALID_ARGUMENT on page_token.
import { invalidField } from './errors.js';

/** Longest page token accepted, in characters. */
const PAGE_TOKEN_LENGTH_MAX = 256;

export interface PageCodec {
  encode(key: string): string;
  /** undefined for the first page (empty token). */
  decode(token: string): string | undefined;
}

/** A codec for keys of one kind: `prefix` tells kinds apart, `valid` checks a decoded key. */
export function pageCodec(prefix: string, valid: (key: string) => boolean): PageCodec {
  return {
    encode: (key) => Buffer.from(`${prefix}${key}`).toString('base64url'),
    decode: (token) => {
      if (token === '') return undefined;
      // Buffer skips characters that are not base64url: only a token that is exactly the
      // encoding of its text is one this service issued.
      const text = token.length <= PAGE_TOKEN_LENGTH_MAX ? Buffer.from(token, 'base64url').toString() : '';
      if (Buffer.from(text).toString('base64url') !== token) throw invalidField('page_token', 'is not a token this service issued');
      const key = text.startsWith(prefix) ? text.slice(prefix.length) : '';
      if (!valid(key)) throw invalidField('page_token', 'is not a token this service issued');
      return key;
    },
  };
}

/**
 * Cuts a page from rows fetched with limit pageSize + 1: the extra row only tells that
 * another page exists, and the token points after the last row kept.
 */
export function cutPage<T>(rows: T[], pageSize: number, codec: PageCodec, keyOf: (row: T) => string): { page: T[]; nextPageToken: string } {
  const page = rows.slice(0, pageSize);
  const last = page[page.length - 1];
  return { page, nextPageToken: rows.length > pageSize && last ? codec.encode(keyOf(last)) : '' };
}
