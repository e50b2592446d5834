// Development tests of the escrow contract on @ton/sandbox: every check and exit code of
// billing/PROTOCOL.md, the money on every path (the client always gets everything back,
// stake included), and the gas each operation costs (printed at the end).
//
// Sections follow PROTOCOL.md: deploy and get methods; charge (checks 1-9 in order, then the
// payout); owner requests; closing and refund; plain transfers and unknown ops; gas.
const { Blockchain } = require('@ton/sandbox');
const { beginCell, toNano, Address, Dictionary } = require('@ton/core');
const L = require('./layout.cjs');
const { EXIT, OP, STORAGE_RESERVE } = L;

const T0 = 1_800_000_000;
const CLOSE_DELAY = 3600;
// nanoton per million tokens; not round, so charges have fractions to round up
const PRICES = { prompt: 100_000_007, cached: 10_000_003, completion: 400_000_009 };
const DEPOSIT = toNano('10');
const STAKE = toNano('2');
const CHARGE_VALUE = toNano('0.05');
const OWNER_VALUE = toNano('0.05');

const gas = {}; // operation -> { gasUsed, gasFees, totalFees }
function recordGas(name, s) {
  if (!gas[name]) gas[name] = { gasUsed: s.gasUsed, gasFees: s.gasFees, totalFees: s.totalFees };
}

async function setup({ deposit = DEPOSIT, stake = STAKE } = {}) {
  const blockchain = await Blockchain.create();
  blockchain.now = T0;
  const owner = L.keyPair('owner');
  const guest = L.keyPair('guest-a');
  const guest2 = L.keyPair('guest-b');
  const stranger = L.keyPair('stranger');
  const client = await blockchain.treasury('client');
  const operator = await blockchain.treasury('operator');
  const payout = await blockchain.treasury('payout');
  const refundWallet = await blockchain.treasury('refund');
  const init = { code: L.CODE, data: L.escrowData({ owner, closeDelay: CLOSE_DELAY, prices: PRICES }) };
  const address = L.escrowAddress(init);
  const escrow = blockchain.openContract(new L.Escrow(address, init));

  const ctx = { blockchain, owner, guest, guest2, stranger, client, operator, payout, refundWallet, init, address, escrow };

  ctx.send = async (via, value, body, bounce = true) => {
    const result = await escrow.sendBody(via.getSender(), value, body, bounce);
    const tx = L.txTo(result, address);
    return { result, tx, ...L.summary(tx), out: L.outMessages(tx) };
  };
  ctx.balance = async () => (await blockchain.getContract(address)).balance;
  ctx.state = () => escrow.getEscrow();

  ctx.voucher = ({ seq, tokens, g = guest, signer = g, escrowAddr = address, payoutAddr = payout.address, tag } = {}) =>
    L.signed(L.voucherPayload({ escrow: escrowAddr, guest: g, seq, tokens, payout: payoutAddr, tag }), signer);
  ctx.authorization = ({ g = guest, cap = toNano('5'), expiresAt = T0 + 86400, signer = owner, escrowAddr = address, tag } = {}) =>
    L.signed(L.authorizationPayload({ escrow: escrowAddr, guest: g, cap, expiresAt, tag }), signer);
  ctx.charge = async ({ voucher, authorization, final = false, value = CHARGE_VALUE, queryId = 7 }) =>
    ctx.send(operator, value, L.chargeBody({ queryId, final, voucher, authorization: authorization ?? ctx.authorization() }));
  ctx.ownerRequest = async (action, { seqno, validUntil = blockchain.now + 300, key = owner, escrowAddr = address, tag, value = OWNER_VALUE, via = client } = {}) => {
    const s = seqno ?? (await ctx.state()).ownerSeqno;
    const request = L.ownerRequestPayload({ escrow: escrowAddr, seqno: s, validUntil, action, tag });
    return ctx.send(via, value, L.ownerBody({ request, key }));
  };

  const deployed = await ctx.send(client, deposit, L.opBody(OP.TOP_UP));
  expect(deployed.exitCode).toBe(0);
  ctx.deployed = deployed;
  if (stake > 0n) {
    const r = await ctx.ownerRequest({ type: 'set_stake', stake });
    expect(r.exitCode).toBe(0);
  }
  return ctx;
}

const TOKENS_1 = { prompt: 1000, cached: 200, completion: 500 };
const TOKENS_2 = { prompt: 5000, cached: 1200, completion: 2500 };

describe('deploy and get methods', () => {
  test('the address is the StateInit hash of the committed code and the initial data', async () => {
    const ctx = await setup({ stake: 0n });
    expect(ctx.deployed.exitCode).toBe(0);
    const account = await ctx.blockchain.getContract(ctx.address);
    expect(account.accountState.type).toBe('active');
    const st = await ctx.state();
    expect(st.owner).toBe(L.keyInt(ctx.owner));
    expect(st.closeDelay).toBe(CLOSE_DELAY);
    expect(st.stake).toBe(0n);
    expect(st.totalCharged).toBe(0n);
    expect(st.ownerSeqno).toBe(0);
    expect(st.unlockAt).toBe(0);
    expect(st.balance).toBe(await ctx.balance());
    expect(await ctx.escrow.getPrices()).toEqual({ prompt: BigInt(PRICES.prompt), cached: BigInt(PRICES.cached), completion: BigInt(PRICES.completion) });
    expect(await ctx.escrow.getGuest(L.keyInt(ctx.guest))).toEqual({ seq: 0n, charged: 0n });
    recordGas('deploy (top_up + StateInit)', ctx.deployed);
  });

  test('the data after deploy is the initial data (nothing written by a top_up)', async () => {
    const ctx = await setup({ stake: 0n });
    const account = await ctx.blockchain.getContract(ctx.address);
    const data = account.accountState.state.data;
    expect(data.hash().equals(ctx.init.data.hash())).toBe(true);
  });
});

describe('layout', () => {
  test('the data after charges and a close parses as PROTOCOL.md EscrowData', async () => {
    const ctx = await setup();
    expect((await ctx.charge({ voucher: ctx.voucher({ seq: 3, tokens: TOKENS_1 }) })).exitCode).toBe(0);
    expect((await ctx.charge({ voucher: ctx.voucher({ g: ctx.guest2, seq: 9, tokens: TOKENS_2 }), authorization: ctx.authorization({ g: ctx.guest2 }) })).exitCode).toBe(0);
    expect((await ctx.ownerRequest({ type: 'request_close', refundTo: ctx.refundWallet.address })).exitCode).toBe(0);
    const account = await ctx.blockchain.getContract(ctx.address);
    const s = account.accountState.state.data.beginParse();
    expect(s.loadUintBig(256)).toBe(L.keyInt(ctx.owner));
    expect(s.loadUint(32)).toBe(CLOSE_DELAY);
    expect(s.loadRef().hash().equals(L.pricesCell(PRICES).hash())).toBe(true);
    expect(s.loadCoins()).toBe(STAKE);
    const charged1 = L.chargeFor(PRICES, TOKENS_1), charged2 = L.chargeFor(PRICES, TOKENS_2);
    expect(s.loadCoins()).toBe(charged1 + charged2);
    expect(s.loadUint(32)).toBe(2); // set_stake, request_close
    expect(s.loadUint(32)).toBe(T0 + CLOSE_DELAY);
    expect(s.loadAddress().equals(ctx.refundWallet.address)).toBe(true);
    const guests = s.loadDict(Dictionary.Keys.BigUint(256), L.guestStateValue);
    expect(s.remainingBits).toBe(0);
    expect(s.remainingRefs).toBe(0);
    expect(guests.size).toBe(2);
    expect(guests.get(L.keyInt(ctx.guest))).toEqual({ seq: 3n, charged: charged1, receiptsRoot: L.receiptsRootFor(3) });
    expect(guests.get(L.keyInt(ctx.guest2))).toEqual({ seq: 9n, charged: charged2, receiptsRoot: L.receiptsRootFor(9) });
    // and the same data built from scratch has the same hash
    const rebuilt = L.escrowData({ owner: ctx.owner, closeDelay: CLOSE_DELAY, prices: PRICES, stake: STAKE, totalCharged: charged1 + charged2, ownerSeqno: 2, unlockAt: T0 + CLOSE_DELAY, refundTo: ctx.refundWallet.address, guests });
    expect(rebuilt.hash().equals(account.accountState.state.data.hash())).toBe(true);
  });
});

describe('charge', () => {
  test('ok: pays the delta to the payout address, the sender pays the gas', async () => {
    const ctx = await setup();
    const before = await ctx.balance();
    const r = await ctx.charge({ voucher: ctx.voucher({ seq: 1, tokens: TOKENS_1 }) });
    expect(r.exitCode).toBe(0);
    expect(r.actionCode).toBe(0);
    const delta = L.chargeFor(PRICES, TOKENS_1);
    // 800·100_000_007 + 200·10_000_003 + 500·400_000_009 = 282_000_010_700 -> /1e6 rounded up
    expect(delta).toBe(282_001n);
    // the escrow loses exactly delta (plus its own storage fee, zero here: the clock did not move)
    expect(before - (await ctx.balance())).toBe(delta + r.storageFees);
    // one message: to the voucher's payout address, delta + what is left of the incoming value
    expect(r.out.length).toBe(1);
    expect(r.out[0].dest.equals(ctx.payout.address)).toBe(true);
    expect(r.out[0].bounce).toBe(false);
    expect(r.out[0].value).toBeGreaterThan(delta);
    expect(r.out[0].value).toBeLessThan(delta + CHARGE_VALUE);
    const body = r.out[0].body.beginParse();
    expect(body.loadUint(32)).toBe(OP.PAYOUT);
    expect(body.loadUintBig(64)).toBe(7n);
    expect(body.loadUintBig(256)).toBe(L.keyInt(ctx.owner));
    expect(body.remainingBits).toBe(0);
    expect(await ctx.escrow.getGuest(L.keyInt(ctx.guest))).toEqual({ seq: 1n, charged: delta });
    expect((await ctx.state()).totalCharged).toBe(delta);
    recordGas('charge (first voucher of a key)', r);

    // a later voucher pays only the difference
    const r2 = await ctx.charge({ voucher: ctx.voucher({ seq: 5, tokens: TOKENS_2 }) });
    expect(r2.exitCode).toBe(0);
    const total = L.chargeFor(PRICES, TOKENS_2);
    expect(before - (await ctx.balance())).toBe(total);
    expect(await ctx.escrow.getGuest(L.keyInt(ctx.guest))).toEqual({ seq: 5n, charged: total });
    expect((await ctx.state()).totalCharged).toBe(total);
    recordGas('charge (next voucher of a key)', r2);
  });

  test('charge formula: cached clamped to prompt, rounded up, same as chargeFor', async () => {
    const ctx = await setup();
    const cases = [
      { prompt: 1, cached: 5, completion: 0 },       // cached > prompt counts as cached = prompt
      { prompt: 2, cached: 5, completion: 1 },
      { prompt: 1000, cached: 0, completion: 0 },
      { prompt: 1000, cached: 1000, completion: 3 },
      { prompt: 123456, cached: 7890, completion: 4321 },
    ];
    for (const [i, tokens] of cases.entries()) {
      const g = L.keyPair(`formula-${i}`); // one key each: the charges are not cumulative
      const r = await ctx.charge({ voucher: ctx.voucher({ g, seq: 1, tokens }), authorization: ctx.authorization({ g }) });
      expect(r.exitCode).toBe(0);
      expect((await ctx.escrow.getGuest(L.keyInt(g))).charged).toBe(L.chargeFor(PRICES, tokens));
    }
    expect(L.chargeFor(PRICES, cases[0])).toBe(11n); // ceil(10_000_003 / 1e6)
  });

  test('replayed voucher, older voucher, and a lower charge are refused (1000)', async () => {
    const ctx = await setup();
    const v5 = ctx.voucher({ seq: 5, tokens: TOKENS_2 });
    expect((await ctx.charge({ voucher: v5 })).exitCode).toBe(0);
    expect((await ctx.charge({ voucher: v5 })).exitCode).toBe(EXIT.VOUCHER_NOT_NEWER);
    expect((await ctx.charge({ voucher: ctx.voucher({ seq: 4, tokens: TOKENS_2 }) })).exitCode).toBe(EXIT.VOUCHER_NOT_NEWER);
    // newer sequence but a lower cumulative charge
    expect((await ctx.charge({ voucher: ctx.voucher({ seq: 6, tokens: TOKENS_1 }) })).exitCode).toBe(EXIT.VOUCHER_NOT_NEWER);
    // seq 0 is never newer than "absent"
    expect((await ctx.charge({ voucher: ctx.voucher({ g: ctx.guest2, seq: 0, tokens: TOKENS_1 }), authorization: ctx.authorization({ g: ctx.guest2 }) })).exitCode).toBe(EXIT.VOUCHER_NOT_NEWER);
    // same charge, newer seq: accepted, pays nothing more
    const before = await ctx.balance();
    const r = await ctx.charge({ voucher: ctx.voucher({ seq: 7, tokens: TOKENS_2 }) });
    expect(r.exitCode).toBe(0);
    expect(await ctx.balance()).toBe(before);
  });

  test('1001: voucher not signed by its guest key, or not a voucher', async () => {
    const ctx = await setup();
    expect((await ctx.charge({ voucher: ctx.voucher({ seq: 1, tokens: TOKENS_1, signer: ctx.stranger }) })).exitCode).toBe(EXIT.BAD_VOUCHER_SIGNATURE);
    // signed by the guest but tagged as something else
    expect((await ctx.charge({ voucher: ctx.voucher({ seq: 1, tokens: TOKENS_1, tag: L.TAG.AUTHORIZATION }) })).exitCode).toBe(EXIT.BAD_VOUCHER_SIGNATURE);
    // signature over a different payload (tokens changed after signing)
    const good = L.voucherPayload({ escrow: ctx.address, guest: ctx.guest, seq: 1, tokens: TOKENS_1, payout: ctx.payout.address });
    const forged = L.voucherPayload({ escrow: ctx.address, guest: ctx.guest, seq: 1, tokens: TOKENS_2, payout: ctx.payout.address });
    const sig = L.signed(good, ctx.guest).beginParse().loadBuffer(64);
    const swapped = beginCell().storeBuffer(sig).storeRef(forged).endCell();
    expect((await ctx.charge({ voucher: swapped })).exitCode).toBe(EXIT.BAD_VOUCHER_SIGNATURE);
    // checked first: a forged voucher with a bad authorization still gets 1001
    expect((await ctx.charge({ voucher: swapped, authorization: ctx.authorization({ signer: ctx.stranger }) })).exitCode).toBe(EXIT.BAD_VOUCHER_SIGNATURE);
  });

  test('1002: authorization signed by another key, or an owner-signed payload of another kind', async () => {
    const ctx = await setup();
    const voucher = ctx.voucher({ seq: 1, tokens: TOKENS_1 });
    expect((await ctx.charge({ voucher, authorization: ctx.authorization({ signer: ctx.stranger }) })).exitCode).toBe(EXIT.BAD_OWNER_SIGNATURE);
    expect((await ctx.charge({ voucher, authorization: ctx.authorization({ signer: ctx.guest }) })).exitCode).toBe(EXIT.BAD_OWNER_SIGNATURE);
    expect((await ctx.charge({ voucher, authorization: ctx.authorization({ tag: L.TAG.OWNER_REQUEST }) })).exitCode).toBe(EXIT.BAD_OWNER_SIGNATURE);
    // checked before the escrow address: a stranger's authorization for another escrow -> 1002
    expect((await ctx.charge({ voucher, authorization: ctx.authorization({ signer: ctx.stranger, escrowAddr: ctx.payout.address }) })).exitCode).toBe(EXIT.BAD_OWNER_SIGNATURE);
  });

  test('1003: voucher for another escrow; 1004: authorization for another escrow; 1005: other guest key', async () => {
    const ctx = await setup();
    const other = Address.parse('0:' + 'ab'.repeat(32));
    expect((await ctx.charge({ voucher: ctx.voucher({ seq: 1, tokens: TOKENS_1, escrowAddr: other }) })).exitCode).toBe(EXIT.WRONG_ESCROW);
    // both wrong: the voucher's is checked first
    expect((await ctx.charge({ voucher: ctx.voucher({ seq: 1, tokens: TOKENS_1, escrowAddr: other }), authorization: ctx.authorization({ escrowAddr: other }) })).exitCode).toBe(EXIT.WRONG_ESCROW);
    const voucher = ctx.voucher({ seq: 1, tokens: TOKENS_1 });
    expect((await ctx.charge({ voucher, authorization: ctx.authorization({ escrowAddr: other }) })).exitCode).toBe(EXIT.WRONG_AUTHORIZATION_ESCROW);
    // an authorization of another guest key
    expect((await ctx.charge({ voucher, authorization: ctx.authorization({ g: ctx.guest2 }) })).exitCode).toBe(EXIT.GUEST_KEY_MISMATCH);
    // a voucher of another guest key (correctly signed by it) with guest-a's authorization
    expect((await ctx.charge({ voucher: ctx.voucher({ g: ctx.guest2, seq: 1, tokens: TOKENS_1 }) })).exitCode).toBe(EXIT.GUEST_KEY_MISMATCH);
    // nothing was charged by any of them
    expect((await ctx.state()).totalCharged).toBe(0n);
  });

  test('1006: cumulative charge above the cap; exactly the cap is fine', async () => {
    const ctx = await setup();
    const total = L.chargeFor(PRICES, TOKENS_2);
    expect((await ctx.charge({ voucher: ctx.voucher({ seq: 1, tokens: TOKENS_2 }), authorization: ctx.authorization({ cap: total - 1n }) })).exitCode).toBe(EXIT.CAP_EXCEEDED);
    expect((await ctx.charge({ voucher: ctx.voucher({ seq: 1, tokens: TOKENS_2 }), authorization: ctx.authorization({ cap: total }) })).exitCode).toBe(0);
    // the cap bounds the cumulative charge, not the delta
    const bigger = { prompt: 6000, cached: 1200, completion: 2500 };
    expect((await ctx.charge({ voucher: ctx.voucher({ seq: 2, tokens: bigger }), authorization: ctx.authorization({ cap: total }) })).exitCode).toBe(EXIT.CAP_EXCEEDED);
    // the largest counts: exact arithmetic (at most 3·(2^64−1)^2/1e6 < 2^120, so always a Coins)
    const max = (1n << 64n) - 1n;
    const huge = { prompt: max, cached: 0, completion: max };
    expect((await ctx.charge({ voucher: ctx.voucher({ seq: 3, tokens: huge }), authorization: ctx.authorization({ cap: toNano('1000') }) })).exitCode).toBe(EXIT.CAP_EXCEEDED);
    expect((await ctx.charge({ voucher: ctx.voucher({ seq: 3, tokens: huge }), authorization: ctx.authorization({ cap: (1n << 120n) - 1n }) })).exitCode).toBe(EXIT.INSUFFICIENT_BALANCE);
    // and a replay is reported before the cap
    expect((await ctx.charge({ voucher: ctx.voucher({ seq: 1, tokens: bigger }), authorization: ctx.authorization({ cap: total }) })).exitCode).toBe(EXIT.VOUCHER_NOT_NEWER);
  });

  test('1007: expired authorization, with close_delay of grace to settle', async () => {
    const ctx = await setup();
    const expiresAt = T0 + 100;
    const authorization = ctx.authorization({ expiresAt });
    ctx.blockchain.now = expiresAt + CLOSE_DELAY - 1;
    expect((await ctx.charge({ voucher: ctx.voucher({ seq: 1, tokens: TOKENS_1 }), authorization })).exitCode).toBe(0);
    ctx.blockchain.now = expiresAt + CLOSE_DELAY;
    expect((await ctx.charge({ voucher: ctx.voucher({ seq: 2, tokens: TOKENS_2 }), authorization })).exitCode).toBe(EXIT.EXPIRED);
  });

  test('1008: the delta must be on the balance before the message (above the storage reserve)', async () => {
    const ctx = await setup({ deposit: toNano('1'), stake: 0n });
    const held = await ctx.balance();
    // tokens whose charge is exactly what the escrow holds above the reserve ... and 1 more
    const perCompletion = BigInt(PRICES.completion); // nanoton per million completion tokens
    const exact = held - STORAGE_RESERVE;
    const tokensFor = (amount) => ({ prompt: 0, cached: 0, completion: (amount * 1_000_000n) / perCompletion });
    const over = tokensFor(exact + 400n); // charge = exact + 400 (a multiple of 400 nanoton per 1000 tokens)
    expect(L.chargeFor(PRICES, over)).toBeGreaterThan(exact);
    const big = toNano('100');
    // the message's own value does not count towards what the escrow holds
    expect((await ctx.charge({ voucher: ctx.voucher({ seq: 1, tokens: over }), authorization: ctx.authorization({ cap: big }), value: toNano('5') })).exitCode).toBe(EXIT.INSUFFICIENT_BALANCE);
    const fits = tokensFor(exact - (exact % 400n));
    const r = await ctx.charge({ voucher: ctx.voucher({ seq: 1, tokens: fits }), authorization: ctx.authorization({ cap: big }) });
    expect(r.exitCode).toBe(0);
    expect(await ctx.balance()).toBeGreaterThanOrEqual(STORAGE_RESERVE);
  });

  test('charges take from the stake: the stake binds the client, not the operator', async () => {
    const ctx = await setup({ deposit: toNano('3'), stake: toNano('2') });
    const tokens = { prompt: 0, cached: 0, completion: 6_000_000 }; // 2.4 TON
    const r = await ctx.charge({ voucher: ctx.voucher({ seq: 1, tokens }), authorization: ctx.authorization({ cap: toNano('5') }) });
    expect(r.exitCode).toBe(0);
    // now balance < stake: nothing can be withdrawn, the stake can't be set, close still works
    expect((await ctx.ownerRequest({ type: 'withdraw', amount: 1n, to: ctx.client.address })).exitCode).toBe(EXIT.INSUFFICIENT_FREE_BALANCE);
    expect((await ctx.ownerRequest({ type: 'request_close', refundTo: ctx.refundWallet.address })).exitCode).toBe(0);
    ctx.blockchain.now = T0 + CLOSE_DELAY;
    const before = await ctx.refundWallet.getBalance();
    const held = await ctx.balance();
    const refund = await ctx.send(ctx.client, OWNER_VALUE, L.opBody(OP.REFUND));
    expect(refund.exitCode).toBe(0);
    expect(await ctx.balance()).toBe(0n);
    expect((await ctx.refundWallet.getBalance()) - before).toBeGreaterThan(held - toNano('0.01'));
  });
});

describe('owner requests', () => {
  test('set_stake: only up, at most the balance before the message less the reserve', async () => {
    const ctx = await setup();
    expect((await ctx.ownerRequest({ type: 'set_stake', stake: STAKE - 1n })).exitCode).toBe(EXIT.STAKE_DECREASE);
    const balance = await ctx.balance();
    expect((await ctx.ownerRequest({ type: 'set_stake', stake: balance - STORAGE_RESERVE + 1n })).exitCode).toBe(EXIT.INSUFFICIENT_FREE_BALANCE);
    const r = await ctx.ownerRequest({ type: 'set_stake', stake: toNano('3') });
    expect(r.exitCode).toBe(0);
    recordGas('owner set_stake', r);
    expect((await ctx.state()).stake).toBe(toNano('3'));
    // equal is fine (and still consumes a seqno)
    const seqno = (await ctx.state()).ownerSeqno;
    expect((await ctx.ownerRequest({ type: 'set_stake', stake: toNano('3') })).exitCode).toBe(0);
    expect((await ctx.state()).ownerSeqno).toBe(seqno + 1);
  });

  test('withdraw: only what is above stake + reserve, to a payable address', async () => {
    const ctx = await setup();
    const free = (await ctx.balance()) - STORAGE_RESERVE - STAKE;
    expect((await ctx.ownerRequest({ type: 'withdraw', amount: free + 1n, to: ctx.client.address })).exitCode).toBe(EXIT.INSUFFICIENT_FREE_BALANCE);
    expect((await ctx.ownerRequest({ type: 'withdraw', amount: toNano('1'), to: Address.parse('7:' + '11'.repeat(32)) })).exitCode).toBe(EXIT.BAD_ADDRESS);
    expect((await ctx.ownerRequest({ type: 'withdraw', amount: toNano('1'), to: ctx.address })).exitCode).toBe(EXIT.BAD_ADDRESS);
    const before = await ctx.refundWallet.getBalance();
    const r = await ctx.ownerRequest({ type: 'withdraw', amount: free, to: ctx.refundWallet.address });
    expect(r.exitCode).toBe(0);
    expect(r.actionCode).toBe(0);
    recordGas('owner withdraw', r);
    const got = (await ctx.refundWallet.getBalance()) - before;
    expect(got).toBeGreaterThan(free - toNano('0.01'));
    expect(got).toBeLessThanOrEqual(free);
    // the stake and the reserve stay (the request's own value, less gas, stays too)
    expect(await ctx.balance()).toBeGreaterThanOrEqual(STAKE + STORAGE_RESERVE);
  });

  test('1002 another key, 1003 another escrow, 1010 seqno replay, 1011 expired, unknown action', async () => {
    const ctx = await setup();
    const action = { type: 'set_stake', stake: toNano('3') };
    expect((await ctx.ownerRequest(action, { key: ctx.stranger })).exitCode).toBe(EXIT.BAD_OWNER_SIGNATURE);
    expect((await ctx.ownerRequest(action, { tag: L.TAG.AUTHORIZATION })).exitCode).toBe(EXIT.BAD_OWNER_SIGNATURE);
    expect((await ctx.ownerRequest(action, { escrowAddr: ctx.client.address })).exitCode).toBe(EXIT.WRONG_ESCROW);
    expect((await ctx.ownerRequest(action, { seqno: 5 })).exitCode).toBe(EXIT.WRONG_OWNER_SEQNO);
    expect((await ctx.ownerRequest(action, { validUntil: ctx.blockchain.now - 1 })).exitCode).toBe(EXIT.OWNER_REQUEST_EXPIRED);
    expect((await ctx.ownerRequest(action, { validUntil: ctx.blockchain.now })).exitCode).toBe(0);
    // replaying the exact same message (same seqno, same signature): 1010
    const seqno = (await ctx.state()).ownerSeqno;
    const request = L.ownerRequestPayload({ escrow: ctx.address, seqno, validUntil: T0 + 300, action: { type: 'set_stake', stake: toNano('4') } });
    const body = L.ownerBody({ request, key: ctx.owner });
    expect((await ctx.send(ctx.operator, OWNER_VALUE, body)).exitCode).toBe(0); // any wallet can relay it
    expect((await ctx.send(ctx.operator, OWNER_VALUE, body)).exitCode).toBe(EXIT.WRONG_OWNER_SEQNO);
    expect((await ctx.ownerRequest({ type: 'raw', tag: 0x09 })).exitCode).toBe(EXIT.UNKNOWN_OP);
    // the action is looked at only after the signature: a stranger's unknown action is 1002
    expect((await ctx.ownerRequest({ type: 'raw', tag: 0x09 }, { key: ctx.stranger })).exitCode).toBe(EXIT.BAD_OWNER_SIGNATURE);
    // a refused request bounces its value back
    const r = await ctx.ownerRequest(action, { seqno: 99 });
    expect(r.out.length).toBe(1);
    expect(r.out[0].dest.equals(ctx.client.address)).toBe(true);
    expect(r.result.transactions.some((t) => t.inMessage.info.type === 'internal' && t.inMessage.info.bounced)).toBe(true);
  });
});

describe('closing and refund', () => {
  test('request_close refunds everything above the stake at once; refund only after the delay, everything back incl. the stake', async () => {
    const ctx = await setup();
    await ctx.charge({ voucher: ctx.voucher({ seq: 1, tokens: TOKENS_1 }) });
    const refundBefore = await ctx.refundWallet.getBalance();
    const r = await ctx.ownerRequest({ type: 'request_close', refundTo: ctx.refundWallet.address });
    expect(r.exitCode).toBe(0);
    expect(r.actionCode).toBe(0);
    recordGas('owner request_close', r);
    const st = await ctx.state();
    expect(st.unlockAt).toBe(T0 + CLOSE_DELAY);
    expect(await ctx.balance()).toBe(STAKE + STORAGE_RESERVE);
    expect((await ctx.refundWallet.getBalance()) - refundBefore).toBeGreaterThan(DEPOSIT - STAKE - toNano('0.1'));

    // second request_close, top_up: 1014 (the top_up's value comes back by bounce)
    expect((await ctx.ownerRequest({ type: 'request_close', refundTo: ctx.client.address })).exitCode).toBe(EXIT.ALREADY_CLOSING);
    const topUp = await ctx.send(ctx.client, toNano('1'), L.opBody(OP.TOP_UP));
    expect(topUp.exitCode).toBe(EXIT.ALREADY_CLOSING);
    expect(topUp.out.length).toBe(1); // the bounce, back to the sender, with the value less gas
    expect(topUp.out[0].dest.equals(ctx.client.address)).toBe(true);
    expect(topUp.out[0].value).toBeGreaterThan(toNano('0.99'));
    expect(await ctx.balance()).toBe(STAKE + STORAGE_RESERVE);

    // refund before the delay: 1013
    ctx.blockchain.now = T0 + CLOSE_DELAY - 1;
    expect((await ctx.send(ctx.operator, OWNER_VALUE, L.opBody(OP.REFUND))).exitCode).toBe(EXIT.NOT_UNLOCKED);
    // from unlock_at anyone can send it: everything to refund_to
    ctx.blockchain.now = T0 + CLOSE_DELAY;
    const before = await ctx.refundWallet.getBalance();
    const refund = await ctx.send(ctx.operator, OWNER_VALUE, L.opBody(OP.REFUND));
    expect(refund.exitCode).toBe(0);
    expect(refund.actionCode).toBe(0);
    recordGas('refund', refund);
    expect(await ctx.balance()).toBe(0n);
    const got = (await ctx.refundWallet.getBalance()) - before;
    expect(got).toBeGreaterThan(STAKE + STORAGE_RESERVE); // plus the refund message's leftover value
    // the escrow stays, open again with no stake; what it has seen stays seen
    const after = await ctx.state();
    expect(after.stake).toBe(0n);
    expect(after.unlockAt).toBe(0);
    expect(after.ownerSeqno).toBe(st.ownerSeqno);
    expect(await ctx.escrow.getGuest(L.keyInt(ctx.guest))).toEqual({ seq: 1n, charged: L.chargeFor(PRICES, TOKENS_1) });
  });

  test('refund while open: 1013', async () => {
    const ctx = await setup();
    expect((await ctx.send(ctx.client, OWNER_VALUE, L.opBody(OP.REFUND))).exitCode).toBe(EXIT.NOT_UNLOCKED);
  });

  test('request_close to an address that could never be paid: 1016', async () => {
    const ctx = await setup();
    expect((await ctx.ownerRequest({ type: 'request_close', refundTo: Address.parse('7:' + '11'.repeat(32)) })).exitCode).toBe(EXIT.BAD_ADDRESS);
    expect((await ctx.ownerRequest({ type: 'request_close', refundTo: ctx.address })).exitCode).toBe(EXIT.BAD_ADDRESS);
    // the masterchain is fine
    expect((await ctx.ownerRequest({ type: 'request_close', refundTo: Address.parse('-1:' + '22'.repeat(32)) })).exitCode).toBe(0);
  });

  test('charges settle during the close delay, not after it (1007)', async () => {
    const ctx = await setup();
    expect((await ctx.ownerRequest({ type: 'request_close', refundTo: ctx.refundWallet.address })).exitCode).toBe(0);
    ctx.blockchain.now = T0 + CLOSE_DELAY - 1;
    expect((await ctx.charge({ voucher: ctx.voucher({ seq: 1, tokens: TOKENS_1 }) })).exitCode).toBe(0);
    ctx.blockchain.now = T0 + CLOSE_DELAY;
    expect((await ctx.charge({ voucher: ctx.voucher({ seq: 2, tokens: TOKENS_2 }) })).exitCode).toBe(EXIT.EXPIRED);
  });

  test('final charge: 1013 while open; while closing it pays the delta and returns everything else at once', async () => {
    const ctx = await setup();
    expect((await ctx.charge({ voucher: ctx.voucher({ seq: 1, tokens: TOKENS_1 }), final: true })).exitCode).toBe(EXIT.NOT_UNLOCKED);
    expect((await ctx.ownerRequest({ type: 'request_close', refundTo: ctx.refundWallet.address })).exitCode).toBe(0);
    const refundBefore = await ctx.refundWallet.getBalance();
    const payoutBefore = await ctx.payout.getBalance();
    const r = await ctx.charge({ voucher: ctx.voucher({ seq: 1, tokens: TOKENS_2 }), final: true });
    expect(r.exitCode).toBe(0);
    expect(r.actionCode).toBe(0);
    recordGas('charge final (closes)', r);
    const delta = L.chargeFor(PRICES, TOKENS_2);
    expect(r.out.length).toBe(2);
    expect(r.out[0].dest.equals(ctx.payout.address)).toBe(true);
    expect(r.out[1].dest.equals(ctx.refundWallet.address)).toBe(true);
    // everything left (the forwarding fee comes out of it)
    expect(r.out[1].value).toBeLessThan(STAKE + STORAGE_RESERVE - delta);
    expect(r.out[1].value).toBeGreaterThan(STAKE + STORAGE_RESERVE - delta - toNano('0.01'));
    expect(await ctx.balance()).toBe(0n);
    expect((await ctx.payout.getBalance()) - payoutBefore).toBeGreaterThan(delta);
    expect((await ctx.refundWallet.getBalance()) - refundBefore).toBeGreaterThan(STAKE + STORAGE_RESERVE - delta - toNano('0.01'));
    const st = await ctx.state();
    expect(st.unlockAt).toBe(0);
    expect(st.stake).toBe(0n);
    expect(st.totalCharged).toBe(delta);
  });

  test('after a close the escrow can be funded again; no voucher or owner request can be replayed', async () => {
    const ctx = await setup();
    const v1 = ctx.voucher({ seq: 1, tokens: TOKENS_1 });
    expect((await ctx.charge({ voucher: v1 })).exitCode).toBe(0);
    const seqno = (await ctx.state()).ownerSeqno;
    const closeRequest = L.ownerRequestPayload({ escrow: ctx.address, seqno, validUntil: T0 + 100000, action: { type: 'request_close', refundTo: ctx.refundWallet.address } });
    const closeBody = L.ownerBody({ request: closeRequest, key: ctx.owner });
    expect((await ctx.send(ctx.client, OWNER_VALUE, closeBody)).exitCode).toBe(0);
    ctx.blockchain.now = T0 + CLOSE_DELAY;
    expect((await ctx.send(ctx.client, OWNER_VALUE, L.opBody(OP.REFUND))).exitCode).toBe(0);
    // funded again (a plain top_up, no StateInit needed: the account stayed)
    expect((await ctx.send(ctx.client, toNano('5'), L.opBody(OP.TOP_UP))).exitCode).toBe(0);
    expect((await ctx.charge({ voucher: v1 })).exitCode).toBe(EXIT.VOUCHER_NOT_NEWER);
    expect((await ctx.send(ctx.client, OWNER_VALUE, closeBody)).exitCode).toBe(EXIT.WRONG_OWNER_SEQNO);
  });

  test('issue #77: every path gives the client everything back, stake included', async () => {
    // (a) close, wait, refund; (b) close, final charge; (c) close with charges eating into the stake
    for (const path of ['refund', 'final', 'drained']) {
      const ctx = await setup();
      const spent = { value: 0n };
      const clientStart = DEPOSIT; // what went in
      if (path === 'drained') {
        const tokens = { prompt: 0, cached: 0, completion: 20_000_000 }; // 8 TON: above the stake after close
        expect((await ctx.charge({ voucher: ctx.voucher({ seq: 1, tokens }), authorization: ctx.authorization({ cap: toNano('9') }) })).exitCode).toBe(0);
        spent.value = L.chargeFor(PRICES, tokens);
      }
      const refundStart = await ctx.refundWallet.getBalance();
      expect((await ctx.ownerRequest({ type: 'request_close', refundTo: ctx.refundWallet.address })).exitCode).toBe(0);
      if (path === 'final') {
        const r = await ctx.charge({ voucher: ctx.voucher({ seq: 1, tokens: TOKENS_1 }), final: true });
        expect(r.exitCode).toBe(0);
        spent.value = L.chargeFor(PRICES, TOKENS_1);
      } else {
        ctx.blockchain.now = T0 + CLOSE_DELAY;
        expect((await ctx.send(ctx.client, OWNER_VALUE, L.opBody(OP.REFUND))).exitCode).toBe(0);
      }
      expect(await ctx.balance()).toBe(0n);
      const back = (await ctx.refundWallet.getBalance()) - refundStart;
      // everything but the charges and a few gas fees (each well under 0.01 TON)
      expect(back).toBeGreaterThan(clientStart - spent.value - toNano('0.05'));
      expect((await ctx.state()).stake).toBe(0n);
    }
  });
});

describe('plain transfers and unknown ops', () => {
  test('no body, op 0 (a comment), short body: 1009; unknown op: 0xffff; top_up adds the value', async () => {
    const ctx = await setup();
    expect((await ctx.send(ctx.client, toNano('1'), beginCell().endCell())).exitCode).toBe(EXIT.PLAIN_TRANSFER);
    expect((await ctx.send(ctx.client, toNano('1'), beginCell().storeUint(0, 32).storeStringTail('hi').endCell())).exitCode).toBe(EXIT.PLAIN_TRANSFER);
    expect((await ctx.send(ctx.client, toNano('1'), beginCell().storeUint(1, 8).endCell())).exitCode).toBe(EXIT.PLAIN_TRANSFER);
    expect((await ctx.send(ctx.client, toNano('1'), beginCell().storeUint(0x12345678, 32).endCell())).exitCode).toBe(EXIT.UNKNOWN_OP);
    expect((await ctx.send(ctx.client, toNano('1'), L.opBody(OP.PAYOUT))).exitCode).toBe(EXIT.UNKNOWN_OP);
    const before = await ctx.balance();
    const r = await ctx.send(ctx.client, toNano('1'), L.opBody(OP.TOP_UP));
    expect(r.exitCode).toBe(0);
    recordGas('top_up', r);
    expect((await ctx.balance()) - before).toBe(toNano('1') - r.gasFees - r.storageFees);
  });
});

describe('gas', () => {
  test('charge with many guest keys in the dictionary', async () => {
    const ctx = await setup();
    for (let i = 0; i < 16; i++) {
      const g = L.keyPair(`guest-${i}`);
      const r = await ctx.charge({ voucher: ctx.voucher({ g, seq: 1, tokens: TOKENS_1 }), authorization: ctx.authorization({ g }) });
      expect(r.exitCode).toBe(0);
    }
    const g = L.keyPair('guest-3');
    const r = await ctx.charge({ voucher: ctx.voucher({ g, seq: 2, tokens: TOKENS_2 }), authorization: ctx.authorization({ g }) });
    expect(r.exitCode).toBe(0);
    recordGas('charge (next voucher, 16 keys)', r);
  });

  afterAll(() => {
    const rows = Object.entries(gas).map(([op, g]) => `  ${op.padEnd(34)} gas ${String(g.gasUsed).padStart(6)}  compute fee ${String(g.gasFees).padStart(9)} nanoTON  total fees ${String(g.totalFees).padStart(9)} nanoTON`);
    console.log(`escrow gas (sandbox, mainnet config, basechain):\n${rows.join('\n')}`);
  });
});
