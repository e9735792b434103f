"""Label names shared by every per-source family, the exporter's own included: a source is
always (project, source) by name, so series of different families join in PromQL."""

SOURCE_LABELS = ("project", "source")
