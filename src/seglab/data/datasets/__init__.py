"""The datasets behind the ``data`` config group, one module each; every one returns a
:class:`seglab.data.dataset.SegmentationData`.

- :mod:`seglab.data.datasets.shapes`: the synthetic set (``data=shapes``);
- :mod:`seglab.data.datasets.folder`: images and masks in folders (``data=folder``, and
  ``data=camvid``, which is a folder layout in its config only);
- :mod:`seglab.data.datasets.oxford_pet`: Oxford-IIIT Pet from TensorFlow Datasets
  (``data=oxford_pet``).
"""
