"""The fine-tune section of a job's pages: progress, the loss curve and the published adapter."""

from django.utils.html import format_html, format_html_join

from .models import FineTune

# A page draws at most this many loss points; longer curves are thinned evenly.
MAX_CURVE_POINTS = 400


def render_loss_curve(job):
    """Return the HTML of a fine-tune job's panel, or an empty string for other jobs."""
    from frontend.plots import sparkline

    finetune = FineTune.objects.filter(pk=job.pk).select_related("base", "entry").first()
    if finetune is None:
        return ""
    losses = list(finetune.loss_points.order_by("step").values_list("loss", flat=True))
    stride = max(1, -(-len(losses) // MAX_CURVE_POINTS))
    curve = sparkline(losses[::stride], width=640, height=160, label="Training loss per step") if losses else ""
    loss = f"{finetune.loss:.4f}" if finetune.loss is not None else "n/a"
    facts = [
        ("Base model", finetune.base.slug),
        ("Step", f"{finetune.step} of {finetune.config['max_steps']}"),
        ("Latest loss", loss),
        ("Resumed", f"{finetune.resume_count} times" if finetune.resume_count else "no"),
    ]
    if finetune.entry_id:
        facts.append(("Catalog entry", finetune.entry.slug))
        facts.append(("Adapter", f"step {finetune.adapter_step}: {finetune.adapter_choice}"))
    rows = format_html_join("", "<dt>{}</dt><dd>{}</dd>", facts)
    return format_html('<section class="panel finetune"><h2>Fine-tune {}</h2><dl>{}</dl>{}</section>',
                       finetune.name, rows, curve)
