# %% [markdown]
# # One results file
#
# > A sweep's results, in full: its tables and every figure it supports, read from its results file when the page is built.

# %% [markdown]
# The website has one such page per results file in `evaluation_results/`: the book's build (`eib.book.write_result_pages`)
# runs this notebook once for each, with `label` set to the file's label, so that no page carries every sweep's
# charts at once. Run by hand (or by `nbdev_test`) it shows the first results file present. The sweeps compared, and
# what each file holds, are on [Results](21_results.ipynb).

# %%
#| code-fold: true
from IPython.display import Markdown, display
from eib import figures as F
from eib.results import load_all, show_dataset, vega_script

F.use_offline_renderer()
named, bad = load_all()
vega_script()

# %% tags=["parameters"]
label = None  # the results file's label (`eib.results.load_all`); None: the first one present

# %%
#| code-fold: true
_pick = [(l, r) for l, r in named if label in (None, l)][:1]
if _pick: show_dataset(*_pick[0], level="##")
else: display(Markdown(f"No results file labelled {label!r} is present." if label else "No results file is present yet."))
