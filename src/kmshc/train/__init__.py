"""Learn: fit hard-concrete head gates with Lightning (``kmshc train``). ``gates`` is the gate
distribution, ``objectives`` the losses, ``module`` the LightningModule, ``datamodule`` its
batches, ``run`` the run folder and its ``gates.json``, ``plots`` the gate heat map."""
