// The cells of billing/PROTOCOL.md, built in JS for the development tests (the Rust side
// builds the same ones in billing/src/layout.rs), and a small wrapper around a deployed escrow.
const { readFileSync } = require('node:fs');
const { join } = require('node:path');
const { Address, Cell, beginCell, contractAddress, Dictionary, SendMode } = require('@ton/core');
const { keyPairFromSeed, sign } = require('@ton/crypto');

const CODE = Cell.fromBoc(readFileSync(join(__dirname, '..', 'build', 'escrow.boc')))[0];

const STORAGE_RESERVE = 10_000_000n;
const TOKENS_PER_PRICE_UNIT = 1_000_000n;

const TAG = { VOUCHER: 0x564f5543, AUTHORIZATION: 0x41555448, OWNER_REQUEST: 0x4f574e52 };
const OP = { TOP_UP: 0x544f5055, CHARGE: 0x43484752, OWNER: 0x4f574e52, REFUND: 0x52465544, PAYOUT: 0x5041594f };
const ACTION = { SET_STAKE: 0x01, WITHDRAW: 0x02, REQUEST_CLOSE: 0x03 };

const EXIT = {
  VOUCHER_NOT_NEWER: 1000,
  BAD_VOUCHER_SIGNATURE: 1001,
  BAD_OWNER_SIGNATURE: 1002,
  WRONG_ESCROW: 1003,
  WRONG_AUTHORIZATION_ESCROW: 1004,
  GUEST_KEY_MISMATCH: 1005,
  CAP_EXCEEDED: 1006,
  EXPIRED: 1007,
  INSUFFICIENT_BALANCE: 1008,
  PLAIN_TRANSFER: 1009,
  WRONG_OWNER_SEQNO: 1010,
  OWNER_REQUEST_EXPIRED: 1011,
  INSUFFICIENT_FREE_BALANCE: 1012,
  NOT_UNLOCKED: 1013,
  ALREADY_CLOSING: 1014,
  STAKE_DECREASE: 1015,
  BAD_ADDRESS: 1016,
  UNKNOWN_OP: 0xffff,
};

// A deterministic Ed25519 key pair from a label.
function keyPair(label) {
  const seed = Buffer.alloc(32);
  Buffer.from(label).copy(seed);
  return keyPairFromSeed(seed);
}

const keyInt = (kp) => BigInt('0x' + kp.publicKey.toString('hex'));

function pricesCell(p) {
  return beginCell().storeUint(p.prompt, 64).storeUint(p.cached, 64).storeUint(p.completion, 64).endCell();
}

// GuestState = seq:uint64 charged:Coins receipts_root:uint256
const guestStateValue = {
  serialize: (v, b) => b.storeUint(v.seq, 64).storeCoins(v.charged).storeUint(v.receiptsRoot, 256),
  parse: (s) => ({ seq: s.loadUintBig(64), charged: s.loadCoins(), receiptsRoot: s.loadUintBig(256) }),
};

// The receipts root a test voucher commits to: 32 bytes of seq's low byte (what the Rust
// tests use too); the model, a fixed stand-in.
function receiptsRootFor(seq) {
  return BigInt('0x' + (Number(BigInt(seq) & 0xffn).toString(16).padStart(2, '0')).repeat(32));
}
const MODEL_STAND_IN = BigInt('0x' + '3c'.repeat(32));

// EscrowData, in PROTOCOL.md's field order.
function escrowData({ owner, closeDelay, prices, stake = 0n, totalCharged = 0n, ownerSeqno = 0, unlockAt = 0, refundTo = null, guests = null }) {
  const dict = guests ?? Dictionary.empty(Dictionary.Keys.BigUint(256), guestStateValue);
  return beginCell()
    .storeBuffer(owner.publicKey, 32)
    .storeUint(closeDelay, 32)
    .storeRef(pricesCell(prices))
    .storeCoins(stake)
    .storeCoins(totalCharged)
    .storeUint(ownerSeqno, 32)
    .storeUint(unlockAt, 32)
    .storeAddress(refundTo)
    .storeDict(dict)
    .endCell();
}

function escrowAddress(init) {
  return contractAddress(0, init);
}

// charged = ceil(((prompt − c)·pp + c·cp + completion·kp) / 1e6), c = min(cached, prompt)
function chargeFor(prices, t) {
  const prompt = BigInt(t.prompt), cached0 = BigInt(t.cached), completion = BigInt(t.completion);
  const cached = cached0 < prompt ? cached0 : prompt;
  const total = (prompt - cached) * BigInt(prices.prompt) + cached * BigInt(prices.cached) + completion * BigInt(prices.completion);
  return (total + TOKENS_PER_PRICE_UNIT - 1n) / TOKENS_PER_PRICE_UNIT;
}

function signed(payload, kp) {
  return beginCell().storeBuffer(sign(payload.hash(), kp.secretKey)).storeRef(payload).endCell();
}

function voucherPayload({ escrow, guest, seq, tokens, payout, tag = TAG.VOUCHER, receiptsRoot = receiptsRootFor(seq) }) {
  const counts = beginCell().storeUint(tokens.prompt, 64).storeUint(tokens.cached, 64).storeUint(tokens.completion, 64).endCell();
  const commitment = beginCell().storeUint(receiptsRoot, 256).storeUint(MODEL_STAND_IN, 256).endCell();
  return beginCell()
    .storeUint(tag, 32)
    .storeAddress(escrow)
    .storeBuffer(guest.publicKey, 32)
    .storeUint(seq, 64)
    .storeRef(counts)
    .storeAddress(payout)
    .storeRef(commitment)
    .endCell();
}

function authorizationPayload({ escrow, guest, cap, expiresAt, tag = TAG.AUTHORIZATION }) {
  return beginCell()
    .storeUint(tag, 32)
    .storeAddress(escrow)
    .storeBuffer(guest.publicKey, 32)
    .storeCoins(cap)
    .storeUint(expiresAt, 32)
    .endCell();
}

function chargeBody({ queryId = 7, final = false, voucher, authorization }) {
  return beginCell().storeUint(OP.CHARGE, 32).storeUint(queryId, 64).storeBit(final).storeRef(voucher).storeRef(authorization).endCell();
}

function ownerAction(action) {
  const b = beginCell();
  switch (action.type) {
    case 'set_stake':
      return b.storeUint(ACTION.SET_STAKE, 8).storeCoins(action.stake);
    case 'withdraw':
      return b.storeUint(ACTION.WITHDRAW, 8).storeCoins(action.amount).storeAddress(action.to);
    case 'request_close':
      return b.storeUint(ACTION.REQUEST_CLOSE, 8).storeAddress(action.refundTo);
    case 'raw':
      return b.storeUint(action.tag, 8);
    default:
      throw new Error(`unknown action ${action.type}`);
  }
}

function ownerRequestPayload({ escrow, seqno, validUntil, action, tag = TAG.OWNER_REQUEST }) {
  return beginCell()
    .storeUint(tag, 32)
    .storeAddress(escrow)
    .storeUint(seqno, 32)
    .storeUint(validUntil, 32)
    .storeBuilder(ownerAction(action))
    .endCell();
}

function ownerBody({ queryId = 9, request, key }) {
  return beginCell()
    .storeUint(OP.OWNER, 32)
    .storeUint(queryId, 64)
    .storeBuffer(sign(request.hash(), key.secretKey))
    .storeRef(request)
    .endCell();
}

const opBody = (op, queryId = 5) => beginCell().storeUint(op, 32).storeUint(queryId, 64).endCell();

// The escrow as a @ton/sandbox contract: raw sends and the three get methods.
class Escrow {
  constructor(address, init) {
    this.address = address;
    this.init = init;
  }
  async sendBody(provider, via, value, body, bounce = true) {
    await provider.internal(via, { value, body, bounce, sendMode: SendMode.PAY_GAS_SEPARATELY });
  }
  async getEscrow(provider) {
    const { stack } = await provider.get('get_escrow', []);
    return {
      owner: stack.readBigNumber(),
      balance: stack.readBigNumber(),
      stake: stack.readBigNumber(),
      totalCharged: stack.readBigNumber(),
      ownerSeqno: stack.readNumber(),
      unlockAt: stack.readNumber(),
      closeDelay: stack.readNumber(),
    };
  }
  async getPrices(provider) {
    const { stack } = await provider.get('get_prices', []);
    return { prompt: stack.readBigNumber(), cached: stack.readBigNumber(), completion: stack.readBigNumber() };
  }
  async getGuest(provider, guestKey) {
    const { stack } = await provider.get('get_guest', [{ type: 'int', value: guestKey }]);
    return { seq: stack.readBigNumber(), charged: stack.readBigNumber() };
  }
}

// The transaction a message to `address` caused in a send result (the first one).
function txTo(result, address) {
  const tx = result.transactions.find((t) => t.inMessage && t.inMessage.info.dest && Address.isAddress(t.inMessage.info.dest) && t.inMessage.info.dest.equals(address));
  if (!tx) throw new Error(`no transaction at ${address}`);
  return tx;
}

// { exitCode, success, gasUsed, gasFees, storageFees, actionCode, totalFees }
function summary(tx) {
  const d = tx.description;
  if (d.type !== 'generic') throw new Error(`unexpected transaction ${d.type}`);
  const c = d.computePhase;
  return {
    exitCode: c.type === 'vm' ? c.exitCode : null,
    success: c.type === 'vm' ? c.success : false,
    gasUsed: c.type === 'vm' ? c.gasUsed : 0n,
    gasFees: c.type === 'vm' ? c.gasFees : 0n,
    storageFees: d.storagePhase ? d.storagePhase.storageFeesCollected : 0n,
    actionCode: d.actionPhase ? d.actionPhase.resultCode : null,
    aborted: d.aborted,
    totalFees: tx.totalFees.coins,
  };
}

// Internal messages the escrow sent in a transaction: [{ dest, value, body, bounce }]
function outMessages(tx) {
  return [...tx.outMessages.values()]
    .filter((m) => m.info.type === 'internal')
    .map((m) => ({ dest: m.info.dest, value: m.info.value.coins, body: m.body, bounce: m.info.bounce }));
}

module.exports = {
  CODE, STORAGE_RESERVE, TAG, OP, ACTION, EXIT,
  keyPair, keyInt, pricesCell, escrowData, escrowAddress, chargeFor, signed,
  voucherPayload, authorizationPayload, chargeBody, ownerRequestPayload, ownerBody, opBody,
  Escrow, txTo, summary, outMessages, guestStateValue, receiptsRootFor,
};
