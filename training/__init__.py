"""sift-train: distils transformer teachers into small ONNX students and writes a bundle the server loads.

Where each kind of thing goes:
- a stage: its body, export and evaluation in the capability's module (intent.py, retrieval.py,
  relevance.py), its name in stages.py:STAGES, and one call, in order, in pipeline.py;
- a teacher: its name and model folder in teachers.py (TEACHERS, teacher_dir); bulk labelling on Ray in
  scale.py;
- a student: its network and training loop in students.py (transformer_student.py for the small
  transformer), trained by its capability's module;
- a data loader: training/data/loaders.py (catalogues), data/judgements.py (graded pairs),
  data/taxonomy.py (label sets), gathered by data/dataset.py:load_training_data;
- a gate or a manifest field: gate.py, bundle_writer.py; a preset or method switch: presets.py;
- a report measurement: a part module in report/.

Features and the relevance cascade are the server's (server/featurize.py, server/relevance_cascade.py):
training imports them, so a student is evaluated exactly as it is served.
"""
