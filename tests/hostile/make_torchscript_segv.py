#!/usr/bin/env python3
"""Regenerate the TorchScript SIGSEGV fixtures (fastrnn isolation regression tests).

Outputs (next to this script unless a directory is given as argv[1]):
  pt_segv_seed32.pt : mutate_zip_pair(base.pt, seed=32)   <- primary fixture
      code/__torch__.py            byte 121 : 's'  -> 0xf3  (lexer error)
      code/__torch__.py.debug_pkl  byte 241 : 0x01 -> 0x13  (textIndex 1 -> 19,
                                                table has 5 entries)
  pt_segv_seed23.pt : mutate_zip_pair(base.pt, seed=23)   <- second, same bug
      code/__torch__/torch/nn/modules/linear.py           byte 216 : ' ' -> 0xc2
      code/__torch__/torch/nn/modules/linear.py.debug_pkl byte 376 : 0x01 -> 0x42
The archive is rewritten with zipfile (ZIP_STORED, fixed timestamps), so the
ZIP itself is valid and the CRCs are correct.

Observed with torch 2.13.0+cpu / Python 3.11.7:
  torch.jit.load(p, map_location="cpu") -> process killed by SIGSEGV (rc -11).
  Stack: Lexer::lexRaw -> Lexer::expected -> SourceRange::highlight ->
  ConcreteSourceRangeUnpickler::unpickle -> SourceRangeDeserializer::
  deserialize_source (unchecked textIndex; pytorch/pytorch#185441).
Both member changes are needed: code change only -> Python exception
(UnicodeDecodeError); debug_pkl change only -> loads fine.

base.pt is embedded (base64) because torch.jit.save is not byte-reproducible
(random .data/serialization_id, and member order in the generated code depends
on PYTHONHASHSEED).  It was produced by this script, run as
`python base_pt.py base.pt` in /tmp/crashers:
    import torch, sys
    torch.manual_seed(0)
    class M(torch.nn.Module):
        def __init__(self):
            super().__init__(); self.lstm = torch.nn.LSTM(4, 3, batch_first=True); self.fc = torch.nn.Linear(3, 2)
        def forward(self, x):
            out, _ = self.lstm(x); return self.fc(out[:, -1])
    torch.jit.save(torch.jit.script(M().eval()), sys.argv[1])
"""
import base64, hashlib, io, os, random, sys, zipfile

INTERESTING = [0, 255, 127, 128, 1, 65, 32, 254]
FIXED_DT = (1980, 1, 1, 0, 0, 0)

# ---------------- mutation functions (verbatim from the fuzzer) ----------------
def _mutate_bytes(rng, data, nops):
    b = bytearray(data)
    for _ in range(nops):
        if not b:
            break
        op = rng.random()
        pos = rng.randrange(len(b))
        if op < 0.35:
            b[pos] ^= 1 << rng.randrange(8)
        elif op < 0.65:
            b[pos] = rng.randrange(256)
        elif op < 0.85:
            b[pos] = rng.choice(INTERESTING)
        elif op < 0.92:
            del b[pos]
        else:
            b.insert(pos, rng.randrange(256))
    return bytes(b)

def _zip_members(base):
    z = zipfile.ZipFile(io.BytesIO(base))
    return [(i.filename, z.read(i.filename)) for i in z.infolist()]

def _rezip(members):
    out = io.BytesIO()
    with zipfile.ZipFile(out, 'w', zipfile.ZIP_STORED) as w:
        for name, data in members:
            w.writestr(zipfile.ZipInfo(name, date_time=FIXED_DT), data)
    return out.getvalue()

def _mutate_pkl_ints(rng, data, nops):
    """Structure-aware: overwrite the operand of a random BININT1 ('K') opcode,
    otherwise fall back to a generic byte op."""
    b = bytearray(data)
    for _ in range(nops):
        ks = [i + 1 for i in range(len(b) - 1) if b[i] == 0x4b]
        if ks and rng.random() < 0.7:
            b[rng.choice(ks)] = rng.randrange(256)
        else:
            b[:] = _mutate_bytes(rng, bytes(b), 1)
    return bytes(b)

def mutate_zip_pair(base, seed):
    """Mutate a code/*.py member AND its .debug_pkl in the same trial
    (a compile error in the code is what makes torch unpickle the debug_pkl)."""
    rng = random.Random(seed)
    members = _zip_members(base)
    names = [n for n, _ in members]
    pys = [n for n in names if n.endswith('.py') and n + '.debug_pkl' in names]
    py = rng.choice(pys)
    dbg = py + '.debug_pkl'
    n1 = rng.choice([1, 1, 2])
    n2 = rng.choice([1, 1, 2, 3])
    out = []
    for name, data in members:
        if name == py:
            data = _mutate_bytes(rng, data, n1)
        elif name == dbg:
            data = _mutate_pkl_ints(rng, data, n2)
        out.append((name, data))
    return _rezip(out), f"pair:{py}:ops={n1}+{n2}"


BASE_PT_B64 = """
UEsDBAAACAgAAAAAAAAAAAAAAAAAAAAAAAALABcAYmFzZS9kYXRhLzBGQhMAWlpaWlpaWlpaWlpaWlpaWlpaWuijjbsTk54+fkvz
vsmL2b6xtGO+U4kePkBrO7x6Yeo+Qt1RvdJwHD6eqzK+6mvovb0zDb/WxcO+hLVzvgg0rzyNuWk+Zl6xPtJmyL5puYC+g7xWPid3
9T5DV/O9FTTdPtqVvr1lO3o9tdQFP3kcCb/wF7q+SKwVvsxzZr7KZv8+pJq/vnATiL48hc6+32wKvz6OrL6dGf4+VeeDPlRFjz5n
vfg8C42XvtULyD1rAAq/zpfVvnNkmL7igbo+ilGtPlBLBwiGdmmowAAAAMAAAABQSwMEAAAICAAAAAAAAAAAAAAAAAAAAAAAAAsA
BwBiYXNlL2RhdGEvMUZCAwBaWlo/GYO+PaiqvGgOvT497xI/r6NqPlC8nz2wMsY+Sw2uvu5V3D3SLuW+6uDMvi60mL6mwIU+isJt
PvQZr76UmzI+KEeiPrg9lb3hlbQ8QfwIPqlitz4V6w0/hMzjvsuoWL6eWWg+Buz0PjueAD/vaQI/RFHrPZmGAL/bi1k9WO64vo++
Cb8XUgM/z8PgPrFvE79QSwcI6qstupAAAACQAAAAUEsDBAAACAgAAAAAAAAAAAAAAAAAAAAAAAALADcAYmFzZS9kYXRhLzJGQjMA
WlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaklDdPXowx71NlMK9gFCHvihaYz4/Fq++
M7tYPi99lT4xndM+Cw9dPtZIEr/Iwb++UEsHCAhsPlswAAAAMAAAAFBLAwQAAAgIAAAAAAAAAAAAAAAAAAAAAAAACwAXAGJhc2Uv
ZGF0YS8zRkITAFpaWlpaWlpaWlpaWlpaWlpaWlpkmZM+EHv3PW6Y5r7TNqq+WAsLP80uxz7344C+OMwUvqzLDL/cBSq8Upvevv8D
5L5QSwcIVW2HhjAAAAAwAAAAUEsDBAAACAgAAAAAAAAAAAAAAAAAAAAAAAALABcAYmFzZS9kYXRhLzRGQhMAWlpaWlpaWlpaWlpa
WlpaWlpaWhBNAr2UiLE99h1yvoZnrz7d4rO+XhwGP1BLBwi+8Wn3GAAAABgAAABQSwMEAAAICAAAAAAAAAAAAAAAAAAAAAAAAAsA
LwBiYXNlL2RhdGEvNUZCKwBaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpasZPKPvpG+b5QSwcICp1X
ewgAAAAIAAAAUEsDBAAACAgAAAAAAAAAAAAAAAAAAAAAAAANAD0AYmFzZS9kYXRhLnBrbEZCOQBaWlpaWlpaWlpaWlpaWlpaWlpa
WlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlqAAmNfX3RvcmNoX18KTQpxACmBfShYCAAAAHRyYWluaW5ncQGJ
WBYAAABfaXNfZnVsbF9iYWNrd2FyZF9ob29rcQJOWAQAAABsc3RtcQNjX190b3JjaF9fLnRvcmNoLm5uLm1vZHVsZXMucm5uCkxT
VE0KcQQpgX0oWAwAAAB3ZWlnaHRfaWhfbDBxBWN0b3JjaC5fdXRpbHMKX3JlYnVpbGRfdGVuc29yX3YyCnEGKChYBwAAAHN0b3Jh
Z2VxB2N0b3JjaApGbG9hdFN0b3JhZ2UKcQhYAQAAADBxCVgDAAAAY3B1cQpLMHRRcQtLAChLDEsEdChLBEsBdIhjY29sbGVjdGlv
bnMKT3JkZXJlZERpY3QKcQwpUnRScQ1YDAAAAHdlaWdodF9oaF9sMHEOaAYoKGgHaAhYAQAAADFxD2gKSyR0UXEQSwAoSwxLA3Qo
SwNLAXSIaAwpUnRScRFYCgAAAGJpYXNfaWhfbDBxEmgGKChoB2gIWAEAAAAycRNoCksMdFFxFEsAKEsMdChLAXSIaAwpUnRScRVY
CgAAAGJpYXNfaGhfbDBxFmgGKChoB2gIWAEAAAAzcRdoCksMdFFxGEsAKEsMdChLAXSIaAwpUnRScRloAYloAk5YEwAAAF9mbGF0
X3dlaWdodHNfbmFtZXNxGmN0b3JjaC5qaXQuX3BpY2tsZQpyZXN0b3JlX3R5cGVfdGFnCnEbXShoBWgOaBJoFmVYCQAAAExpc3Rb
c3RyXXEchlJYDAAAAF9hbGxfd2VpZ2h0c3EdaBtdKGgbXShoBWgOaBJoFmVoHIZSZVgPAAAATGlzdFtMaXN0W3N0cl1dcR6GUlgN
AAAAX2ZsYXRfd2VpZ2h0c3EfY3RvcmNoLmppdC5fcGlja2xlCmJ1aWxkX3RlbnNvcmxpc3QKcSAoXShoDWgRaBVoGWV0UnVicSFY
AgAAAGZjcSJjX190b3JjaF9fLnRvcmNoLm5uLm1vZHVsZXMubGluZWFyCkxpbmVhcgpxIymBfShYBgAAAHdlaWdodHEkaAYoKGgH
aAhYAQAAADRxJWgKSwZ0UXEmSwAoSwJLA3QoSwNLAXSIaAwpUnRScSdYBAAAAGJpYXNxKGgGKChoB2gIWAEAAAA1cSloCksCdFFx
KksAKEsCdChLAXSIaAwpUnRScStoAYloAk51YnEsdWJxLS5QSwcIETZqYIEDAACBAwAAUEsDBBQACAgIAAAAAAAAAAAAAAAAAAAA
AAAWADsAYmFzZS9jb2RlL19fdG9yY2hfXy5weUZCNwBaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpa
WlpaWlpaWlpaWlpafY7BbsMgEETv/Yo9Yomg+Gop/YK4PTS3qFphDA0KhmjBaj6/C7Gq9pLTLm9nhjFB5wyjGNO8BtsNLwCIN016
scVSRoQDnD8bnVbn/qFC2kcfv2CAKaVQRT6jW0PASZvrt6YZLyld+f5+Kz5FHc5VWL0hl4U5YklkLoiqTRWjWlqTrIj348dpZLEz
z6XBR6tJHdtg/WwduES1gMg2uL/mUbIA4D7AycacqIPd67YO7dKaHaD6VN0bTGuRgHvJB1Fhp7Z8xL24S3hL0UrompbbbnZnGsCe
waM0Y2uK2B7BGys4upPQS9j1Dz/ZslIE4czvLwL7mv4DUEsHCLL61HP2AAAArQEAAFBLAwQUAAgICAAAAAAAAAAAAAAAAAAAAAAA
IAA8AGJhc2UvY29kZS9fX3RvcmNoX18ucHkuZGVidWdfcGtsRkI4AFpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpa
WlpaWlpaWlpaWlpaWlpaWlpaWlpaTc5BS8MwFAfwtJtT+wnEU44Zzg7F00Rwgm7j2Q1rwYKM2LUprXZrk6Y4b95yEPHuZ/BD2kxh
fQQeeb//g/du+gcIoZuZ6ww9+jDxxvTecyfTEfWGV7fXHBG/ZsQN/7BuuK6IxTjOxWsgIlKyLO7hdXdgcdMf/Ad05ZXsYYovsE7Y
WSmXZN09x4LJSqz+hnFI6tTjoIePT+Zdi7c2h/TlsuiHIigTJsr+IigZLaRdvPG25DsEUChzESb2cyptWqThS8asRZVmEU1XMktL
afEOmRMmXUCAFN/dtPo5p0aiBQwwAWlvQUfxPTiCMwWGckZGsg2DkWxl2pQnLWNwFZjK+dCfGdwpaCnnsylfzZ1vLZcwUtBWzk9D
JN9X9i9QSwcI6tYdPBwBAACCAQAAUEsDBBQACAgIAAAAAAAAAAAAAAAAAAAAAAArAAsAYmFzZS9jb2RlL19fdG9yY2hfXy90b3Jj
aC9ubi9tb2R1bGVzL3Jubi5weUZCBwBaWlpaWlpa1VlLb9s4EL7nVxA5yYBi6GHZsYHsKe2p3V20wV4Mg1AsOtZWllw9WrdF//vO
kKJISZRfzS6wPaQROfPNcF4cTtZJWBTk3cen99b7LKoSNlrcEELpPszDHStZXlBKHsjy9iuLX7Yljbc0cW5tIr+38vs5Dgu1y7/k
3oojPlebTQOHSzoiWZAnlhZZrta33XUlobfaoy3zME7j9AXWnrMsQQXigm6qJKHP4frT1zCP6DbLPsH+71nKnr7tGdJskrCkQn5B
UzBAAQTv4qJcFmXOjxECQk0gt5r9VRdCUgi1cDvKs31WlbDxNk7DZLlJsrBcgUWcMZ4lLNdbuonzQlGg+kjwlFesPu7QXpzuq5IW
8XfWUMQpR5/A7j7P/jZuOhw2inO2LuMMNnr4b8OkQAHbOIpYagTxYXuXRWodDQLrtxhat7CZVjuahN8gArqsLtqFbcgmy7lfqGMV
LNksIGbKLAeD0DH/f5ym4x2P0WKcw++IbANvfXDpfbG0PSzIH3txnuVTtU9Y7QW7JlutHtDzI3L3G+nsG6kXHJY68kwL8uawB4ux
SIgnZUaeGfEeSZYT/9EmL1lJfvx8hN2iZGF0K/hd5H8LJNzXwOzfPQoAG3QmYRqR9YEU26xKIgJm56BI8wwiENL68fMO0PHniJRc
uaLG9iR2lUp07wx07zx0H9C5Y0ZjWu2jsGStWLdGgmwCZMJdUbyzuOx6J2h2KE2zklJLfq2ztIR8hdpgLT2b+CsbcEaCLd4ApzA+
YEwbDIiWXVha1LF74kY1dbYvxvs83o0/hHHB3hzWjAeERadYoao4KUHm+K8wqdibPM/yW8HIINilwD1UR6FGQaVNpQbss9WVDLo3
WrePqvhHEpuzOA1clRafK8a+M6t2mNNXp2Hhv/DFXXgQyCItJRp+CCCnQdKUitHW24PNq1+jEZ0Bf2O1qISqWGNIk9L7FgX7Eq+7
JFv6neVZ0WjCv6yla3dUFX7mQh7ozCZQHKAy8qSEZY78QO8bwfOTqrnOSd3W1+g2H9DNVUc+YFpb9cltKUZp5qrcgRBYf6Ky1oX5
S9G4CWCEQ2yikPFQsNELhe0B071KOR6L6DosSstYuhBY4kEIqEiUUKih19gkZVpYQ4x4o6WzUpEtc9L1FDsC+OoeEv90ZQXJ5JgM
tyNDYgJbW66vg+6Kl15FcPWKoB3AIFEXN1QtQIReLj5UaRnvWgXDdNqmcAhf+dyL3o2JmLrBSeN7HeMHbctOTxt/dtL43qiHCWxt
udOO8Z2e9b1Xt77z6+bHyLO6ZVYqZxO30a+76/LdUc+Tkya1789Mbb+f2oFi3bN8V8GNKjosy0guKkEgLtNWm/lAEGXcWuRkTRtc
U8jvuheBykY90A5xnbqHcHHNwx9+49ukKHfNUZaSD29pXaLNQxDsBRfO2G5k26J9FLviNOKUeHop6vxbE+pw69qU/uKaq4rMJbjK
7YrM0/2tln3d0YIdDiukoYEEoFxx+vV4gAWP59a2nQw7XHLrTs9ZWeUpsQQiAk1G3V7ZvbJXNtBXZZwI6j9DvFI+MjBOumZXN9SX
yDjedXvBWc0nPxv4SF3kEJSAA006jdMIbm34rtLuyjntFEug17dawJc0Vt50oH1xmybBmw21LxoNVhtsV8IUEgSsAARlt3nBe3R1
tBkDnKa78aYD7Y03U2LnJ7X3ndPa++6F2pvbNcBR2g81Z77WnE2Hm7N2RzW7oqPaHu6PlPFZP/7aegH76xV0H4up74uCPq3XJrgW
4I+poaB3s2UpQS6r7r26XksU66KAwUwJ7YptxfmFweIHuCih6+emPztRbU2lwFR4a73xPDNZf41F6OxKzGuknDstdJG4WIswdBOv
MBbhJ1+Yq60g0WytV3xBYtCc+pgAt800RIiAvorwCvrjpxyFyDnC3ETuDpFPnG6DxY8lH8mtyJAjCPEa48DY4NWrngJ6YSVltQZU
m2odRfW7iuiMIBSHFjx37hXPRNfElZoEA5qsGUwXT+oxPa4H5vuEZ9+8E8+94BKW/PWoujhkJpibt2Jutqtg2rkNv6DvCbwPgAv4
i24Y3DccYrZx544EK0ywoFbA1BIGcGoCOlbjuW5ItW5r0We27Ny6uRvfCGjQD/TweneHkcyvVZ+bn15yZNTnVZOvybxpIYL+W2sy
M3FfMRALTr2xzDOxjTrWxO4NnmwCPlItUOD29YdMGWQ8qbN7jc5DqaDn0IUJgZ2xng2mwiIrLm945I+64MITd0FgXP7QLYq9imhK
pcBrz/xkZ0ID6ANogNUgCLAjMKnVcyPAYQ+g8640F/bGr3w4YkKWXk3g7x9WW70zXDt9HdcOlvn/ouSZHL64vABpO46hPa1vcI1K
WncH/Znoq8XAuHFD7ynj1G+ZPicwajA907cI+1nstLspnLI2DPWsr+cldQX+P33kXukj94SP3PN85P5LPuo00NdUyOGOU4CH6J+j
fuowywI4M78odFVouN8n36gmyPhu1/a7D/jgnj+q+tVHsRxJT42qeQ0Hc/5QCmY4ahRzSB2Mv7RGWIFrAtdIMGopCKC6O2Hxhr9W
ese3xN/22vnS8oO+AZ3EAqPzwRXeELz41+6pakrgDcUOtI7csj44b0c6p5fKTZ2bfwBQSwcIRGt19LIHAAB+IAAAUEsDBBQACAgI
AAAAAAAAAAAAAAAAAAAAAAA1ACsAYmFzZS9jb2RlL19fdG9yY2hfXy90b3JjaC9ubi9tb2R1bGVzL3Jubi5weS5kZWJ1Z19wa2xG
QicAWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpanVkLeBzVddbDeo0kS7JkW37JY/m1svWw5CfCsvHb5vga
WxJmwNjr1e5Iu/Zqd2d31pYsC7Ax3JiHwWADxlAKKXmQFCgNJekXSGkppPm+kDZfgC9f6deEtgk0tEDakBJa6Lkzo917dmbtEH18
SP/855x77rnnnnvu9S1FWmNBQcHWa3rZhn7/dTv6t/v7+nt37Nrm79+wcecWo8CnIV1gFGqL8ZeKPyF9UB2MJ48GkiFfSo8OtqqR
WCJttqrhkZ5d8Zje0q0YRdoCR1r8CKl2fzoRCpi6fzAaMP1H9chQ2Ez5WhSjWCtxRBVjkjZLUosnI0N+y7baY4+hGCXaXklivjoy
MtKtRlKRWMoMxIK6GgzrwcNqTNdDKdWMqwM6KqrBeCwUMSPxWCAqPFf748lguC+YjCRMIRSMDyciUV0xSsnwAwEzGPanIsf0FI4v
ZqYYZdoaSSKWHvaHIkk9KGwLoS41MmjPdiCSIXBQPZrS1U7FKCfeJ/VA1B+OhEJ6zBoGDVi6iWT8kP1hwlr2yzp1mW3N+i4pK0aF
tlwyjqrZsPiyoWxVdweCh/VQn26kdaTEainaDknT0rZFpRC0qql40tRDaCUUCQqcjtEv2UWq1Fpz7A0HRvxZYygpWd63bL9iVJHQ
OxMIj+AcrMijk9WZBJR/wv5jejIuxjbForZbyKcYk7VVHtKZZBQrFw2M6smUuiRnGVsVo4Zkb/55oGittiiPaO7qonCd5xSsPWWO
JvQeK3zt1t8oPUVrySetH8GAT4hbAOXrtSke8rjDGjyHDeaJ3NS8M8pNORxzmubzWpQRtOpzlqZ1YiT0ZLrLRZHLuLiNZGNkt/eW
QDBs54oaH1TNsK7a46uY1yZugnA8HQ3hqggBwdrVIuXkNn4KYDrO0Lo9jQuFdEpPYpWIRvQjmMFhvSMlrKTURCCFu2cIDbYrxkyt
J98s7e2pJ4fTWNps33zhkdzNglOfpU2WbDjTnq0tcWe9s6yRYV+LGoubooD5ulrV5WKnztGaPTxJBiJYEfYGoml9SzIZT+IqNmnX
5VnFweadff2sW90yksCM10NOzOxi2bUZq666fHOrOoQjj0mujG9WRTXRA6FmxZjr9jtl7wu010Nm0NOjLlcMVVuZo2DvIpRB+WXZ
sml9HYwkU2amaM7T5rqDZAUmMyZGpplUP1LHMh5hxcLE0I/pvszouDLztd7LVStbXQDfspb8zkpinWh4gWuxXAXTPlUWuuqNR221
RRdpV3lM03LHOvr8zsnsDySHUr7MwUxKObq22BXTzJkhxdTnmfeZ4oyF21nkebjIInHwW6f8DW20aGoeG1akU0OiVCjGEm3bJcTE
T/NWHGAix5a3bc52HWogFlKDIxPVAPNzqXbgMtYGmwPRlJXywtQAJolIeN+YNKvxNtwGY9KU8EOLaupiaVI4SKs28xKDYJDbtGWX
ELA3bW86ZkaGnW2L0UC1dm2ah5pTMTq+wJJ0eSxJF9pY5jruPWOdjk1Eu+vS0e78AtHu+kOj3aVtzDOIc9pYprI7vLOl1Zm7/A3D
u5wkJEZN7vOy7cYKV8WaryZGk/pgdBQbzqFYPKmr+2LxNuvswZOiLX5ET0bjgRA2Mytduyupp9JRUYj8e7e2R1PmMKb8Km16voqF
J+tqrcHzzEFqjbYuXw0g3XWrdchhMzHh8D4sCm3iA/p4havhyhgZiAREF9StzcsnkW2fUO5KrSmfXCgZT8St6az1LDiWkIk7IYYR
RKkez8bL3VCj6DrPkzC3LqPgenLwOlvzKm2Oh7bc7irGBnoZSZv2UWIvpdW0btRmSxJOZ5KR6OxGkU2uVtg25E9YXThK03Yc82Kz
dSHL9c1WQ7e2eBbUnOZcMbZ6xif3XEHBbdpuV7Ka6WSMOtrq3elYv9xXAYzwdm3TZU9tV34m4th1DURH29IxvGVGYrrYTTs8W5nM
eth/tLtP9t/P+tXaVq99NrGWzhRFbSGVxf7aKX/FSYOrspJYfuEg7tT2oL2OZDxudrQnRvXYkQ6sMilxTelY3t7Z2b66IxoZ6EiM
muF4THzoSEVMvU0sWWBIT3VYnX1HLNYxHA+lo/ghGYuhHYNlslJc5j1v5sLTFrVt3UQ93EVuI85a2jeHQxGzHVc1ZV2ocSP7RKd6
jdbmXn+7RjlD+MOBI7o/GA7EhvSQpbPb1VZmCxuWCNP1drAnswHFPDwaIMXoJdvfeq9QjD5Seq2S2632W2cNsv3aBte27lbNdCKq
73OEHOH97hIrjoFkJCRK7LWkmknFZWIs9bgVXRxyr1bjiMoxv47EUGryLI997ks6hkQj5UHSkS5uGJbrXYdPJtHRnRu09bmdqzA0
pJt+3bk2EHsenqCVfVpXjpXmzKUjM5pqtdhj486NY7wZFW/UFEkRJ7U/n7edwtsDrp7I7W1Qj0Yv5av/8r52evp6UNvlSkF7eaS3
sUxyXSIL5IUPaHXuzYOrNuBZCqVnA9HiuRsBq8my6NxsTcewlrQFTDOJ+RrU1npYF+1edq/7N+FWTPkDsVF/IG3Gg4EUBjkWGIiK
LawYoUweZ1YPp6NrZ/NeRnt37XJuabaHvjFpOuMtaiiObZkY377k2zPKyF5iruMt7WrzpSc8qJ3P69emeAx3sjmxfrZTZvwyQ7aK
ljvoqGLR1aPd9i9LlczsMr4NkSKUyWPLhHNt7vLoXkWkRBLZF1K8eYe19pxXQelyjtnitowLFnH1GB63FcU45PlqM9hsr+dwGu/F
osarY+5BxlX8H6a/9eLmfmzAhv9wruNW4G0D1j6cR+7lbZ0i06JaIr9HGUHbNbyNYNOFr7P49JE12559GBnLGXGcODphTPg6nGkV
s0WA1tsYaefDI9JxE9dWeK20pD9x+ERipigo9v9E5UuQV068Pnbjw1gSUyO3eHlVLiM3wOERe1I0L2Q/FCPpeizxvse24zGMO9bn
ZaZVjUZSpi8zXItonVKZflWEMO9JoxgmeYL/gkVWMdKZi4hVcL0Ci9M8Qo7u/NsMRY+6Gp1h7FXsHtd6OjJ99LEbJzuSOTTy6Pwh
z02j5Irl+U8H6O4xbWHuE6xHnO1HmTHXoehxA/R6QD9OLkbuOaLIuPc1hriMYjflv+bRl+ibyYo5bbfX1BTjlszQrlTLtgmKcYLc
f/NH6STZR79nhG51XfJIdE657tQeU74tszxiHjm3iks1prdr83OKkXdzqxicRNUeIiDm4G5hv5SJqrSxcixi/p3OfX6RjErPL3e4
HsGcJQ2PKMadGrjX2h9IJKKjfsmc/SbUKo+AB7SHnGLc5XqesN6OiK5i3K1di1LWlcltxH6qyhYhj2C1ikNP9BLi3tpphckmcMJn
tE7HA2c+tj08fkL6iB9XH3PHh+p0Oopxj2nc64OCYPYq5k9EgofxnzMH0pGoOHFNUW0V46xvv083e6EACrhxn/UL/2NLi8OCgUIo
gmKYBCVQCmVQDhWgQCVUQTVMhhqohTqYAvXQYKGpDpoG06ERZsBMmAWzYQ404be5oMI8aIb5sAAWXlZ/EVpYDD5ogSWwFFqhDdqh
A9Ey6LRQl2V/EY5QDMthBayEVbAa1sAV0A1XwlrogXWwHke3matyuPWwATbijCpgE2xGdgtsxW/bUH477ICrAaBARGQnu2ISN+5n
3yphz5dwKOHscHH4fnZWYfcpHEo5e03A/6pk/13JoYyzhZPC96OX2zmUc7YTAQuWsChqVnA26MAxhApn904KZ0N9VnBHS9gIcpWc
3Sdz5wR3zNar4uy8zD1AbT4q4MES9h7Cas6+JmDW9VcE/JnNTubsJ5R9U8AzNlvD2f8IeK6E/RHCWs6qSwhbU0IGWiBgcynrKuVQ
x9k6By5FOIWzXZTdXULms4eyfQKapezbCOs5u0HAo6XsNoQNnKUoe0rAx0rZ0wincnZRwN5C1lfIYRpnj1D2Uar7ooBvlbKfI5zO
2b9R3V9Q9l0BD5SxqZM5NHL2gYCBMna4jMMMzgpKcdXfgn/kMJOzSaWEKyklmmWl9p4qyOy3c/gLx5yF+SJEeRm7DzVncxYulRY6
IrgphaweRedwdkjmjpeSgI7L3E3U5lnZ0/OUe6I0nPXlXcHdW84ulnNowkmVSTZLyogvpTLXWEZ8mSFzM8uIzbYyyZdOyq2X9Q4I
7oUK9noFh7k4B1nvPOUulJFo/7ls5j3BVSisrJqDytlnAnYobD1u5HmcTS234RqEzZzNLZc0F5aT3Fgkc4upnq+cWF1STsKxlLJt
DuxDOJ+zgwJusuECzkYduBPhQs5ulUc9XU6W4A6Zu5Pq3UWtnqEe3UPZs9SjJwVsVdgAVrdFnD1fTmrfmwJ+qLBPEC7m7GeyE7+g
IfulzL1L9d6jVn8lYGElU3BMH2e/kTU/pdP+X5n7P6r3GbVaUIFwZ6U1kxZcNQF7K9kBhEuwYFH2qgoy7f0VJHHGBDxbyR5HdinW
agc+jLAVi06F5NMTFSQKX5a5P6F6T1KrX60gB8LXKPuUA59H2MbZDyrIqr1O2X8S8EkbtnP2sQOfRtiBgVEkn0oVEt8ymStXiF6F
QqxWKsTfKspOVohHzQKeqWSvVnFYxlmXQs7QfgH7q9h+ZDtx98tOhBQSUF3mBqneELUaEVCvYjFku/AgkTVH6bSPydwY1TtOrd4k
4LNV1kyWc/YVhaTVi5T9Hp322/IwvxLcO1XsI+RWYKLLXGElmXRRpcQVVxK9kkpamilbJmtWCO7jKlaCWb0SK7XMzaVmVJmbR/Xm
U9EFlF0oay6uJPvoCgGfqmYvI1zFWbRSKusJypkCflDNirCsr8ZzXhZ9jHJfrqQngOxAZRVyt09mZ5Bbg3lXJXFrKceqyJbaQ9m+
KjLpfsruFXBLDdtTw+EKzjTKhgQ8WcPOIduNeUnZw3TcOGUN2ePTgltRz0oaOFyJ/aSAq+vZlnoOazn7OmW/IeCpenYfsj1YIqpI
Sv2Isv8gD/OO4N6uZ/+B3Dqsx3TqH1P2t7LmJ4L7dT0rRhfWY02oJprV1YSdXC1p1lYT54cEnN/AViG8CmdaLS3/Oco9JJt5fLLU
jf/dZImpqkGt4iJWV8RhA2dX1pBwrKXsOsqup+wGAZuK2GasfBs52y7gvCK2FNlNnF0v4GIbbsajhLIHqO7BGqkD+2qN5O8LQnBb
EetFvS3Yusvcm4K7vpBFUG8rZ2/J3E+pXlUt8aa2lrBNtdLweq1kJi0EdxezfcUctuGRJ3Pnasnw52XuQar3Azr865R9u5YE413Z
0O8oV1IncVfWCa6EdSK3HWtFHRE9JYu+bXG1bFEthx04/ylydzqFcEsFfKmWvYbwas46KNspa3ZRboWAv6tlpXUcgLNVlN0o4Oo6
tgPZnZxto+wO2W5AcCunsE1TODDO3hDw/Snsc4S7OKurl0TvqbevFQx2wTWwe+Ly+kAhN87jzf3rHK7h7H5ZY12DrbEHeqEP+uFa
2AvXgQbXww2wD27Ev/bDAfDjX46tMrwIP8BChYzjQu/mbLgh/ABrKGKrcTH3YN+DEF6EH3LoxXoiuIWFbCOK9mEWNsj1RHBTC9k0
5Po5+xeZ+1eqt3Aq2vx3VoDoWtxKiNhbhezXCPdyFpwqKUYF91oh+z5y16FvMhejen8q4COF7DmEGmc/l0XfFwNOsqZ0PWcfypQx
zY7XQYxwAAYgCCF81tBhEB8rhiAMETiEDwiH8XcUf088HmD8H2Tzi9kCTPEb8HCaFn6QvVHM3kS4D6+RAj5exF7B8W7EWirgV4rY
iwj3c1Y/HeF3bHiAs+nTCds4neiudOATCP2YdJS9UcC/seFBrEKUPSDg3xexjxAGcKYO/CnCAc5OUPZBAX9YxEI4hSDOSMDsBN8Q
cF+xxYbwUk3ZXwr4ua2rc6Y0IiwpZnUIB7GxaCTs/EYy0BoBby5mnZM4DGERFvBkMXsC2TBWXQeeRRjBbURZEPB8MXsM4SGcvoB/
bLOHOfNT9iDVDdBxg41kBU/QcU9S9pSACyaxdtSN4mMNHfchyl6guhcF/DN73GHOXqKxeoOyb1En32+UEve3jSSNPpW5786wk3oY
i0AM4pDAImBAciJ9g5i+D8HL8H0OMRxzhqT5+YzwQ/ASW4abKI595sywkHuHQ4KzhpmS3HyZWTBTVlqEiBUXsmqEBr70CLig0GKT
eP4I2GLDFPbrlDWp7hFh+EOLNDGSAn3MihClOXuWcM8RF16TXf2xoCZZ1BE8VWUqMcuOUwpMSMMROIrvhCP4FjoKx2AMjsO49dJo
/30T/n3zRAQZRvACnEDPORzl7Ois8AU4BRc5jODBKcCDAoxiMsjMBQEyShdnSZ78RFB/Ad/hcAzXWYC/FMszhs39bASvwmscjuNl
bbbEKDJTKTNVsyVrk2fLo14t0EfwKYdxrB+yhf0yc4Ao+WdLrh5Dij1TxL6HiXcTXqRkrmGOHdBbcgJ6Ak7CrRiHG7Mh/E0xNx6G
m1kzDnEzZ7PmhB9GoQscbsGiIMB5AU5g1yYzPQJklNbPkcYeEdS34AUOJ7GXFODb8CqHW7FJFuAV+FsOpzj7psw8LTPPyMyzsrXn
yKj/KdAH8AmH2/Ce3SRZKGySmKImWam4SXK1CSn2o0L2z8jdjtcymfukyQ7hbbh3bwcOX4LTcAfcCXdlj+yZeGRfhGfgbQ4cPZgb
vgjPCQ++hN2OAC8LcBqHkZm5AkzodM+VRrxFMO/DZxzuwNomM6eRwf2GO5LDnfgcJXN3yloXheDqQrYGBe/CpkHmHpO1HheCDYVs
EQreja8jMvcUNfINmfsm1fsuFX2Rsn8la/61PO8fy8xa1Y703XDGiSw+lRmPYCuQ4nAGD0w1K2waj/L2/wdQSwcId9vDnQAUAAA5
NwAAUEsDBBQACAgIAAAAAAAAAAAAAAAAAAAAAAAuACQAYmFzZS9jb2RlL19fdG9yY2hfXy90b3JjaC9ubi9tb2R1bGVzL2xpbmVh
ci5weUZCIABaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWnVQu27DMAzc8xWEJxtwNbSbgXTs1HbKFgSCbFOxEIUy9EDQ
vy9Fu0WXTiTvjsfH5E1K8O4ITWw/wlw8dsMBQOvVRHPHjDFpDUc4Nw901yU3PTSjM4njRXRjsfZXVKFNBwOckFKIjFT93zpH48jR
lbExBF9tXNK2eK9HM90eJs56CeHG/GcgPH2tyBpH2qLJJWI1e3Nk/NlRvvDcF6ZDyf/yz8zPaMGGWM3bhN4OvHsOcVq0VhIVkbrL
B5Ly8hC1/aXn7jp+LfnniA6eXvd0EHY/+gjVWm2VEHL7DtdcwIi8JsE2dpvVin+/G/XS1x2+AVBLBwjUig6q8AAAAJ8BAABQSwME
FAAICAgAAAAAAAAAAAAAAAAAAAAAADgAKgBiYXNlL2NvZGUvX190b3JjaF9fL3RvcmNoL25uL21vZHVsZXMvbGluZWFyLnB5LmRl
YnVnX3BrbEZCJgBaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWk1NTU/CQBDd8uFH9Qd4c8OpJLAr8UDCwQQT
UbKiSW1iL6Yp7UJX6rb7UQgHjfHSo//A3+oWwTCZycy8eW/eZ80/AwCMHt3J0Auex95d8OS544fbwBte398I4PjmDITlX5gGTcR0
BmeZXIUydhRNZx3IeF7oAfQoV5lsw+7VdhzYouafbmVVtFotW9T98z3ILbiCOqG7lzAPlUK2aPj9PZakupAcjlDKOA2ls3HswMoe
rSibJ7tlykLVtkXT94wayyzTGOVrypd4SaViGVf4EvV6qI9TNsX5WicZrwCsmKbdPIwW4ZwqrDMZJZhz/JbFRWqAP1/zShxocUhA
tGGgV6ZRkLNokVJ7WrA0DhjXKVPaFkfOi0O1SwABpTjeNJOTdyupLsQiNVI31SCgYjXJVylssiQfJfkuJz9W8i8pxUmJfgFQSwcI
euocgUIBAACnAQAAUEsDBAAACAgAAAAAAAAAAAAAAAAAAAAAAAApACcAYmFzZS9jb2RlL19fdG9yY2hfXy90b3JjaC9ubi91dGls
cy9ybm4ucHlGQiMAWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpjbGFzcyBQYWNrZWRTZXF1ZW5jZShOYW1lZFR1
cGxlKToKICBkYXRhIDogVGVuc29yCiAgYmF0Y2hfc2l6ZXMgOiBUZW5zb3IKICBzb3J0ZWRfaW5kaWNlcyA6IE9wdGlvbmFsW1Rl
bnNvcl0KICB1bnNvcnRlZF9pbmRpY2VzIDogT3B0aW9uYWxbVGVuc29yXQpQSwcIl86KOZMAAACTAAAAUEsDBAAACAgAAAAAAAAA
AAAAAAAAAAAAAAAzAAwAYmFzZS9jb2RlL19fdG9yY2hfXy90b3JjaC9ubi91dGlscy9ybm4ucHkuZGVidWdfcGtsRkIIAFpaWlpa
WlpagAJYGAAAAEZPUk1BVF9XSVRIX1NUUklOR19UQUJMRXEAWAAAAABxAYVxAksAY3RvcmNoLmppdC5fcGlja2xlCmJ1aWxkX2lu
dGxpc3QKcQMoXShldFJLAEsAh3EESwBLAIdLAIeFcQWHLlBLBwix8b09agAAAGoAAABQSwMEAAAICAAAAAAAAAAAAAAAAAAAAAAA
ABIAFgBiYXNlL2NvbnN0YW50cy5wa2xGQhIAWlpaWlpaWlpaWlpaWlpaWlpagAIpLlBLBwhtLwlXBAAAAAQAAABQSwMEAAAICAAA
AAAAAAAAAAAAAAAAAAAAAAwAQgBiYXNlL3ZlcnNpb25GQj4AWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpa
WlpaWlpaWlpaWlpaWlpaWlpaWlpaWlozClBLBwjRnmdVAgAAAAIAAABQSwMEAAAICAAAAAAAAAAAAAAAAAAAAAAAAA4AQgBiYXNl
L2J5dGVvcmRlckZCPgBaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpa
WmxpdHRsZVBLBwiFPeMZBgAAAAYAAABQSwMEAAAICAAAAAAAAAAAAAAAAAAAAAAAABsAMQBiYXNlLy5kYXRhL3NlcmlhbGl6YXRp
b25faWRGQi0AWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaMTY3MjY0NTk1NjA4NzA0NDc1NjUx
NTY3Njc1MjM4NzcwMDAyODczN1BLBwgVYNSxKAAAACgAAABQSwECAAAAAAgIAAAAAAAAhnZpqMAAAADAAAAACwAAAAAAAAAAAAAA
AAAAAAAAYmFzZS9kYXRhLzBQSwECAAAAAAgIAAAAAAAA6qstupAAAACQAAAACwAAAAAAAAAAAAAAAAAQAQAAYmFzZS9kYXRhLzFQ
SwECAAAAAAgIAAAAAAAACGw+WzAAAAAwAAAACwAAAAAAAAAAAAAAAADgAQAAYmFzZS9kYXRhLzJQSwECAAAAAAgIAAAAAAAAVW2H
hjAAAAAwAAAACwAAAAAAAAAAAAAAAACAAgAAYmFzZS9kYXRhLzNQSwECAAAAAAgIAAAAAAAAvvFp9xgAAAAYAAAACwAAAAAAAAAA
AAAAAAAAAwAAYmFzZS9kYXRhLzRQSwECAAAAAAgIAAAAAAAACp1XewgAAAAIAAAACwAAAAAAAAAAAAAAAABoAwAAYmFzZS9kYXRh
LzVQSwECAAAAAAgIAAAAAAAAETZqYIEDAACBAwAADQAAAAAAAAAAAAAAAADYAwAAYmFzZS9kYXRhLnBrbFBLAQIAABQACAgIAAAA
AACy+tRz9gAAAK0BAAAWAAAAAAAAAAAAAAAAANEHAABiYXNlL2NvZGUvX190b3JjaF9fLnB5UEsBAgAAFAAICAgAAAAAAOrWHTwc
AQAAggEAACAAAAAAAAAAAAAAAAAARgkAAGJhc2UvY29kZS9fX3RvcmNoX18ucHkuZGVidWdfcGtsUEsBAgAAFAAICAgAAAAAAERr
dfSyBwAAfiAAACsAAAAAAAAAAAAAAAAA7AoAAGJhc2UvY29kZS9fX3RvcmNoX18vdG9yY2gvbm4vbW9kdWxlcy9ybm4ucHlQSwEC
AAAUAAgICAAAAAAAd9vDnQAUAAA5NwAANQAAAAAAAAAAAAAAAAACEwAAYmFzZS9jb2RlL19fdG9yY2hfXy90b3JjaC9ubi9tb2R1
bGVzL3Jubi5weS5kZWJ1Z19wa2xQSwECAAAUAAgICAAAAAAA1IoOqvAAAACfAQAALgAAAAAAAAAAAAAAAACQJwAAYmFzZS9jb2Rl
L19fdG9yY2hfXy90b3JjaC9ubi9tb2R1bGVzL2xpbmVhci5weVBLAQIAABQACAgIAAAAAAB66hyBQgEAAKcBAAA4AAAAAAAAAAAA
AAAAAAApAABiYXNlL2NvZGUvX190b3JjaF9fL3RvcmNoL25uL21vZHVsZXMvbGluZWFyLnB5LmRlYnVnX3BrbFBLAQIAAAAACAgA
AAAAAACXzoo5kwAAAJMAAAApAAAAAAAAAAAAAAAAANIqAABiYXNlL2NvZGUvX190b3JjaF9fL3RvcmNoL25uL3V0aWxzL3Jubi5w
eVBLAQIAAAAACAgAAAAAAACx8b09agAAAGoAAAAzAAAAAAAAAAAAAAAAAOMrAABiYXNlL2NvZGUvX190b3JjaF9fL3RvcmNoL25u
L3V0aWxzL3Jubi5weS5kZWJ1Z19wa2xQSwECAAAAAAgIAAAAAAAAbS8JVwQAAAAEAAAAEgAAAAAAAAAAAAAAAAC6LAAAYmFzZS9j
b25zdGFudHMucGtsUEsBAgAAAAAICAAAAAAAANGeZ1UCAAAAAgAAAAwAAAAAAAAAAAAAAAAAFC0AAGJhc2UvdmVyc2lvblBLAQIA
AAAACAgAAAAAAACFPeMZBgAAAAYAAAAOAAAAAAAAAAAAAAAAAJItAABiYXNlL2J5dGVvcmRlclBLAQIAAAAACAgAAAAAAAAVYNSx
KAAAACgAAAAbAAAAAAAAAAAAAAAAABYuAABiYXNlLy5kYXRhL3NlcmlhbGl6YXRpb25faWRQSwYGLAAAAAAAAAAeAy0AAAAAAAAA
AAATAAAAAAAAABMAAAAAAAAAWAUAAAAAAAC4LgAAAAAAAFBLBgcAAAAAEDQAAAAAAAABAAAAUEsFBgAAAAATABMAWAUAALguAAAA
AA==
"""
BASE_SHA256 = "e2c911a90a3f6df3d61d569c46f216230fa9503e66a13af9327c716cd9b5cb78"
EXPECTED = {32: "059f8936fed6bfd7fdc5472931b12e5bc13fe3c7273c4aa56ca05e53c60c8dac",
            23: "c33a6afc64ae1a96860a6e450e2f42d4255e72800c5ae22ec4b21623340451c3"}

def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    base = base64.b64decode("".join(BASE_PT_B64.split()))
    assert hashlib.sha256(base).hexdigest() == BASE_SHA256
    for seed in (32, 23):
        data, desc = mutate_zip_pair(base, seed)
        p = os.path.join(out, f"pt_segv_seed{seed}.pt")
        open(p, "wb").write(data)
        got = hashlib.sha256(data).hexdigest()
        print(p, desc, got, "OK" if got == EXPECTED[seed] else "MISMATCH")

if __name__ == "__main__":
    main()
