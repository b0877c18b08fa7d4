"""G3 for a Hugging Face model in headless Chromium: on the sentence page of a traced NLLB-style run
(model_type m2m_100, English to French: the target language is the forced first token; random
weights, tokenizer trained here, nothing downloaded), an attention edit chosen in the what-if
controls re-decodes with the run's model in the run's languages, and the page shows the edited
decoding that the same edit gives in Python: its hypothesis (another than the original's), its
forced first token and its attention."""

from __future__ import annotations

import polars as pl
import pytest
import torch
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from dashboard import queries
from pipeline.beam import DecodeConfig
from pipeline.models import load_run_model, run_decoding
from pipeline.models.protocol import AttentionEdit
from pipeline.trace import TraceConfig, trace
from pipeline.whatif import Intervention, redecode
from tests.dashboard.conftest import serving
from tests.dashboard.test_browser import TIMEOUT, wait_text
from tests.pipeline.hf_builders import BUILDERS, LANGUAGES, TEXT
from warehouse import open_warehouse

pytestmark = pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")

RUN = "nllb"
FAMILY = "m2m_100"
SRC, TGT = LANGUAGES[FAMILY]
LAYERS, HEADS = (1,), (0, 2)  # the edit's chosen layer and heads (the model has 2 layers of 4 heads)
_ATTENTION = (  # the z rows of the first figure under a selector, once plotly has drawn it
    "const g = document.querySelector(arguments[0] + ' .js-plotly-plot');"
    "return g && g._fullLayout && g.data && g.data[0] ? g.data[0].z.map(r => Array.from(r)) : null;"
)


@pytest.fixture(scope="module")
def hf_warehouse(tmp_path_factory):
    """A warehouse with one run of a tiny NLLB-style model: 20 sentences, beam 4, per head."""
    root = tmp_path_factory.mktemp("hf-whatif")
    BUILDERS[FAMILY](root / FAMILY)
    corpus = root / "pairs.tsv"
    corpus.write_text("".join(f"{s}\t{r}\n" for s, r in zip(TEXT[:20], TEXT[20:40], strict=True)))
    cfg = TraceConfig(
        model=str(root / FAMILY),
        corpus=str(corpus),
        warehouse=str(root / "wh"),
        run_name=RUN,
        decoding=DecodeConfig(beam=4, topk=5, max_len=12, per_head=True, src_lang=SRC, tgt_lang=TGT),
        device="cpu",
    )
    trace(cfg, progress=False)
    return root


@pytest.fixture(scope="module")
def hf_server(hf_warehouse):
    yield from serving(hf_warehouse / "wh", "--device", "cpu")


def _changing_edit(root):
    """The first sentence and 'set' edit (at step 1 or 2) whose re-decoding's hypothesis differs
    from the traced one (and is not empty), with the sentence's view and the edited re-decoding's view."""
    with open_warehouse(root / "wh") as wh:
        run = queries.run_info(wh, RUN)
        model, decoding = load_run_model(run, torch.device("cpu")), run_decoding(run)  # in its languages
        for sid in range(20):
            view = queries.sentence_view(wh, RUN, sid)
            s = view.sentence
            for step in (2, 1):
                if step >= view.target_steps.height - 1:
                    continue
                for pos in range(view.source_tokens.height - 1):  # not the final </s>
                    edit = AttentionEdit(step, (pos,), "set", layers=LAYERS, heads=HEADS)
                    result = redecode(model, Intervention(s["source"], s["reference"], (), edit), decoding)
                    alt = queries.view_from_tables(result.tables, result.vocabulary)
                    if alt.sentence["hypothesis"] not in (s["hypothesis"], ""):  # changed, not emptied
                        return view, edit, alt
    raise AssertionError("no attention edit changes a hypothesis: are edits reaching the model?")


def _choose(drv, dropdown: str, label: str) -> None:
    """Pick the option ``label`` of the dcc.Dropdown ``dropdown`` as a user does, then close it."""
    button = WebDriverWait(drv, TIMEOUT).until(EC.element_to_be_clickable((By.ID, dropdown)))
    button.click()
    WebDriverWait(drv, TIMEOUT).until(lambda d: button.get_attribute("aria-expanded") == "true")
    menu = drv.find_element(By.ID, button.get_attribute("aria-controls"))
    options = WebDriverWait(drv, TIMEOUT).until(
        lambda d: menu.find_elements(By.CSS_SELECTOR, "[role='option']")
    )
    [option] = [o for o in options if o.text == label]
    option.click()
    if button.get_attribute("aria-expanded") == "true":  # a multi-select stays open
        button.send_keys(Keys.ESCAPE)
    WebDriverWait(drv, TIMEOUT).until(lambda d: button.get_attribute("aria-expanded") == "false")
    WebDriverWait(drv, TIMEOUT).until(EC.text_to_be_present_in_element((By.ID, f"{dropdown}-value"), label))


def test_an_attention_edit_redecodes_the_hf_model(hf_server, hf_warehouse, browser) -> None:
    view, edit, alt = _changing_edit(hf_warehouse)
    sid, step, pos = view.sentence["sent_id"], edit.step, edit.positions[0]
    original, edited = view.sentence["hypothesis"], alt.sentence["hypothesis"]
    assert edited != original
    assert view.target_steps["token"][0] == alt.target_steps["token"][0] == TGT  # forced first token
    expected_attention = queries.attention_matrix(alt.attention, "hyp")
    rows = alt.attention.filter(
        (pl.col("decoding") == "hyp") & (pl.col("step") == step) & (pl.col("src_pos") == pos)
    )
    chosen = pl.col("layer").is_in(LAYERS) & pl.col("head").is_in(HEADS)
    assert set(rows.filter(chosen)["weight"]) == {1.0}  # 'set': all weight there, in the chosen heads
    assert rows.filter(~chosen & (pl.col("layer") >= 0))["weight"].max() < 0.99  # and only there

    browser.get(f"{hf_server}/run/{RUN}/sentence/{sid}")
    wait_text(browser, "What if?")
    _choose(browser, "whatif-step", f"{step}: {view.target_steps['token'][step]}")
    _choose(browser, "whatif-pos", f"{pos}: {view.source_tokens['token'][pos]}")
    for layer in LAYERS:
        _choose(browser, "whatif-layers", f"layer {layer}")
    for head in HEADS:
        _choose(browser, "whatif-heads", f"head {head}")
    assert browser.find_element(By.CSS_SELECTOR, "#whatif-mode input[value='set']").is_selected()
    browser.find_element(By.ID, "whatif-edit").click()

    where = f"in layers {list(LAYERS)} in heads {list(HEADS)}"
    wait_text(browser, f"What if: attention of step {step} only source positions [{pos}] {where}")
    panels = browser.find_elements(By.CSS_SELECTOR, "#whatif-result .grid2 > .panel")
    assert [p.find_element(By.TAG_NAME, "h4").text for p in panels] == ["Original", "What-if"]
    hyps = [p.find_element(By.CSS_SELECTOR, ".whatif-hyp").text for p in panels]
    assert hyps == [f"hypothesis: {original}", f"hypothesis: {edited}"]
    # the what-if's attention heatmap: the edited decoding's, its edited row all on ``pos``
    shown = WebDriverWait(browser, TIMEOUT).until(
        lambda d: d.execute_script(_ATTENTION, "#whatif-result .grid2 > .panel:nth-child(2)")
    )
    assert len(shown) == len(expected_attention)
    for row, want in zip(shown, expected_attention, strict=True):
        assert row == pytest.approx(want, abs=1e-3)
