import math

from genlab.explain.observations import observe, observe_epoch
from genlab.explain.trace import text_chart, trace_rows, training_trace, training_trace_table
from genlab.models import VAE


def history_of(train, test=None):
    return [
        {"epoch": i + 1, "loss": loss, "images_per_second": 1000.0, **({"test_loss": test[i]} if test else {})}
        for i, loss in enumerate(train)
    ]


def test_first_epoch_starts_learning_with_its_number():
    assert observe_epoch(history_of([200.0], [190.0]), "test_loss") == "starts learning: test loss 190"


def test_still_improving_gives_the_relative_change():
    assert observe_epoch(history_of([200.0, 150.0], [190.0, 171.0]), "test_loss") == (
        "still improving: test loss -10.0% since the last epoch"
    )


def test_converged_when_change_under_one_percent_over_three_epochs():
    losses = [200.0, 120.0, 119.5, 119.2, 119.0]
    assert observe_epoch(history_of(losses)).startswith("converged: loss changed -0.8% over 3 epochs")
    # 2% over three epochs is not converged
    losses = [200.0, 120.0, 119.0, 118.5, 117.6]
    assert observe_epoch(history_of(losses)).startswith("still improving")


def test_overfitting_when_test_loss_rises_while_train_loss_falls():
    history = history_of([150.0, 140.0, 130.0, 120.0], [145.0, 140.0, 141.0, 143.0])
    assert observe_epoch(history, "test_loss").startswith("overfitting: test loss rose 2 epochs in a row")
    # one rise alone is just a rise
    assert observe_epoch(history[:3], "test_loss") == "test loss rose +0.7% since the last epoch"


def test_non_finite_loss_is_named():
    assert observe_epoch(history_of([100.0, math.nan])) == "loss is nan: training diverged"


def test_observe_uses_only_the_past():
    history = history_of([200.0, 150.0, 149.9, 149.8, 149.7])
    assert observe(history)[:2] == [observe_epoch(history[:1]), observe_epoch(history[:2])]


def test_trace_rows_keep_first_and_last():
    assert trace_rows(list(range(5))) == [0, 1, 2, 3, 4]
    rows = trace_rows(list(range(100)), max_rows=10)
    assert rows[0] == 0 and rows[-1] == 99 and len(rows) == 10


def test_table_has_the_columns_and_one_row_per_epoch():
    table = training_trace_table(history_of([200.0, 150.0], [190.0, 171.0]), VAE.trace_columns, "test_loss")
    lines = table.splitlines()
    assert [c.strip() for c in lines[0].split("|")] == [
        "Epoch", "Loss", "Test loss", "Recon. accuracy", "images/s", "Observation"
    ]
    assert len(lines) == 4
    assert [c.strip() for c in lines[3].split("|")][:3] == ["2", "150.00", "171.00"]


def test_text_chart_puts_the_highest_value_on_top():
    chart = text_chart({"loss": [4.0, 3.0, 2.0, 1.0]}, height=4).splitlines()
    assert chart[0].endswith("|*   ")  # epoch 1, value 4, top row
    assert chart[3].endswith("|   *")  # epoch 4, value 1, bottom row
    assert chart[0].split("|")[0].strip() == "4" and chart[3].split("|")[0].strip() == "1"
    assert chart[5].strip() == "1  4  epoch"  # first and last epoch under their columns


def test_text_chart_marks_where_series_meet():
    chart = text_chart({"loss": [2.0, 1.0], "test_loss": [2.0, 1.5]}, height=3)
    assert chart.splitlines()[0].endswith("|# ")
    assert chart.splitlines()[-1].strip() == "* loss   o test_loss   # both"


def test_text_chart_resamples_long_series_to_its_width():
    chart = text_chart({"loss": [float(i) for i in range(200)]}, height=5, width=40)
    assert all(len(line.split("|", 1)[1]) == 40 for line in chart.splitlines()[:5])


def test_training_trace_joins_table_and_chart():
    text = training_trace(history_of([200.0, 150.0, 140.0], [190.0, 171.0, 160.0]), VAE)
    assert text.startswith("Training trace\nEpoch")
    assert "* loss   o test_loss" in text
    assert training_trace([], VAE) == "no epochs were completed"
