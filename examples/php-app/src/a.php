<?php
return 'unbuilt';
