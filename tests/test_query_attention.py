"""Attention whose query is the sequence's own final state (ir.PoolTerm kind "query"): the score
of step t is v_t . q with q the recurrent layer's final state, h_n -- prakashpandey9/
Text-Classification-Pytorch's LSTM_Attn.py and the many "attention_net(lstm_output,
final_state)" copies of it. The layer against the float64 reference, its file and its refusal
to stream."""
import numpy as np
import pytest
from conftest import close, rec

import fastrnn
from fastrnn import ir, reference

H = 5


@pytest.mark.parametrize("over", ["steps", "valid", "longest"])
@pytest.mark.parametrize("bi", [False, True], ids=["forward", "bidirectional"])
def test_query_pool_against_the_reference(rng, over, bi, tmp_path):
    """Recurrent -> Pool(query over its output, beside a max), with lengths, states as the
    reference; q the forward direction's last valid step and the backward one's first."""
    F_ = 2 * H if bi else H
    layers = [rec(rng, "lstm", 3, H, "bidirectional" if bi else "forward"),
              ir.Pool(F_, over=over, terms=(ir.PoolTerm("query", 0, F_, score_activation=ir.Act("affine", 0.7, 0.0),
                                                        split=H), ir.PoolTerm("max", 0, F_)))]
    m = fastrnn.Model(layers)
    x = rng.normal(size=(4, 12, 3)).astype(np.float32)
    lengths = np.array([12, 5, 1, 9])
    for kw in ({}, {"lengths": lengths}):
        y, st = m.predict(x, return_state=True, **kw)
        yr, sr = reference.run(layers, x, **kw)
        close(y, yr)
        for a, b in zip(st, sr):
            close(a, b)
    m.save(tmp_path / "q.frnn")
    np.testing.assert_array_equal(fastrnn.load(tmp_path / "q.frnn").predict(x, lengths=lengths),
                                  m.predict(x, lengths=lengths))
    with pytest.raises(fastrnn.UnsupportedError, match="query is the sequence's final value"):
        m.stream(1)
    with pytest.raises(fastrnn.UnsupportedError, match="query is the sequence's final value"):
        fastrnn.StreamPool(m, 2)


def test_query_terms_are_validated_and_versioned(tmp_path):
    with pytest.raises(fastrnn.ModelFormatError, match="split"):
        ir.PoolTerm("query", 0, 4, split=5)
    with pytest.raises(fastrnn.ModelFormatError, match="no score column"):
        ir.PoolTerm("query", 0, 4, score=0)
    with pytest.raises(fastrnn.ModelFormatError, match="split is an option"):
        ir.PoolTerm("attn", 0, 4, score=0, split=2)
    with pytest.raises(fastrnn.ModelFormatError, match="kinds"):
        ir.Pool(4, ("query",))
    assert ir.PoolTerm("query", 1, 4).split == 3
    rng = np.random.default_rng(0)
    m = fastrnn.Model([rec(rng, "gru", 3, H), ir.Pool(H, terms=(ir.PoolTerm("query", 0, H),))])
    m.save(tmp_path / "q.frnn")
    raw = (tmp_path / "q.frnn").read_bytes()
    assert b'"format_version":"6"' in raw.replace(b" ", b"")
    old = raw.replace(b'"format_version":"6"', b'"format_version":"5"')
    (tmp_path / "old.frnn").write_bytes(old)
    with pytest.raises(fastrnn.ModelFormatError, match="query kind in a version 5 file"):
        fastrnn.load(tmp_path / "old.frnn")


def test_info_names_the_query_term(tmp_path, capsys):
    """fastrnn info shows where the query comes from; fastrnn bench says the model does not stream."""
    from fastrnn.cli import main
    rng = np.random.default_rng(1)
    m = fastrnn.Model([rec(rng, "lstm", 3, H, "bidirectional"),
                       ir.Pool(2 * H, terms=(ir.PoolTerm("query", 0, 2 * H, split=H),))])
    m.save(tmp_path / "q.frnn")
    capsys.readouterr()
    assert main(["info", str(tmp_path / "q.frnn")]) == 0
    out = capsys.readouterr().out
    assert f"query[0:{2 * H}] (against the final value: last step [0:{H}], first step [{H}:{2 * H}]" in out
