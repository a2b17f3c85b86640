"""What checks a learner's work, beside the lesson rather than inside it.

- :mod:`~esmm_np.teach.cases`: the cases each exercise is checked on;
- :mod:`~esmm_np.teach.mistakes`: typical wrong answers, so a hint can name one;
- :mod:`~esmm_np.teach.cases_experts`, :mod:`~esmm_np.teach.mistakes_experts`: the same
  for the experts exercises of E3 (softmax gate, mixture, AITM's attention);
- :mod:`~esmm_np.teach.grading`: running a learner's function on a case and comparing;
- :mod:`~esmm_np.teach.torch_bridge`: the same ESMM under PyTorch's autograd (optional).

Learners call :mod:`esmm_np.exercises`; nothing here is needed to read the model.
"""
