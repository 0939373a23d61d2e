// billing.v1.WalletService handlers: deposit addresses and the deposits seen on them.
import { create } from '@bufbuild/protobuf';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import type { ServiceImpl } from '@connectrpc/connect';
import {
  DepositSchema,
  DepositStatus as ProtoStatus,
  type WalletService,
  WatcherState as ProtoWatcherState,
} from '../../gen/billing/v1/wallet_service_pb.js';
import { getAddress } from 'ethers';
import type { DepositView, Wallet, WatcherStatusView } from '../wallet/wallet.js';

const WATCHER_STATE_TO_PROTO: Readonly<Record<WatcherStatusView['state'], ProtoWatcherState>> = {
  starting: ProtoWatcherState.STARTING,
  watching: ProtoWatcherState.WATCHING,
  refused: ProtoWatcherState.REFUSED,
};

const STATUS_TO_PROTO: Readonly<Record<DepositView['status'], ProtoStatus>> = {
  PENDING: ProtoStatus.PENDING,
  CREDITED: ProtoStatus.CREDITED,
  BELOW_MINIMUM: ProtoStatus.BELOW_MINIMUM,
  UNPRICED: ProtoStatus.UNPRICED,
  REORGED: ProtoStatus.REORGED,
  UNSUPPORTED: ProtoStatus.UNSUPPORTED,
};

function checksummed(address: string): string {
  return address === '' ? '' : getAddress(address);
}

export function depositToProto(d: DepositView) {
  return create(DepositSchema, {
    id: d.id,
    userId: d.userId,
    chainId: BigInt(d.chainId),
    txHash: d.txHash,
    logIndex: BigInt(d.logIndex),
    tokenSymbol: d.tokenSymbol,
    rawAmount: d.rawAmount.toString(),
    priceUsdCents: d.priceUsdCents,
    creditsMillicredits: d.creditsMillicredits,
    confirmations: BigInt(d.confirmations),
    status: STATUS_TO_PROTO[d.status],
    detectedAt: timestampFromMs(d.detectedAtMs),
    tokenContract: checksummed(d.tokenContract),
    blockNumber: BigInt(d.blockNumber),
    blockHash: d.blockHash,
    creditPriceUsdCents: d.creditPriceUsdCents,
    transactionId: d.transactionId,
    fromAddress: checksummed(d.fromAddress),
  });
}

export function walletService(wallet: Wallet): ServiceImpl<typeof WalletService> {
  return {
    async getDepositAddress(req) {
      const view = await wallet.getDepositAddress(req.userId);
      return {
        address: view.address,
        derivationIndex: BigInt(view.derivationIndex),
        chains: view.chains.map((c) => ({ chainId: BigInt(c.chainId), name: c.name, paymentUri: c.paymentUri, finality: c.finality })),
        tokens: view.tokens.map((t) => ({
          chainId: BigInt(t.chainId),
          symbol: t.symbol,
          contractAddress: t.contract,
          decimals: t.decimals,
          paymentUri: t.paymentUri,
        })),
        minimumDepositUsdCents: view.minimumUsdCents,
        creditPriceUsdCents: view.creditPriceUsdCents,
      };
    },
    async listDeposits(req) {
      const page = await wallet.listDeposits({ userId: req.userId, pageSize: req.pageSize, pageToken: req.pageToken });
      return { deposits: page.deposits.map(depositToProto), nextPageToken: page.nextPageToken };
    },
    getWatcherStatus() {
      // Never WALLET_DISABLED: with deposits off there is simply no watcher to list.
      return {
        watchers: wallet.watcherStatus().map((w) => ({
          chainId: BigInt(w.chainId),
          name: w.name,
          finality: w.finality,
          state: WATCHER_STATE_TO_PROTO[w.state],
          running: w.running,
          refusal: w.refusal,
          headBlock: BigInt(w.head),
          finalizedBlock: BigInt(w.finalized),
          cursorBlock: BigInt(w.cursor),
          lagBlocks: BigInt(w.lag),
          finalLagBlocks: BigInt(w.finalLag),
          ...(w.lastPollAtMs === undefined ? {} : { lastPollAt: timestampFromMs(w.lastPollAtMs) }),
          lastError: w.lastError,
        })),
      };
    },
  };
}
